"""What `gpt2-adapt eval` shows and writes: a table a person reads, a CSV for scripts, a heatmap PNG.

An output file is never written into the adapter store, and an existing file is replaced only when it is a
previous output of the same kind (a CSV with this header, a PNG drawn by matplotlib) or when asked.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ..errors import ToolkitError, param
from ..files import write_atomic
from ..records import EvalResult

CSV_COLUMNS = [
    "model",
    "adapter",
    "dataset",
    "kind",
    "context",
    "stride",
    "by_document",
    "detokenize",
    "perplexity",
    "bits_per_byte",
    "byte_perplexity",
    "word_perplexity",
    "mean_nll",
    "tokens",
    "bytes",
    "words",
    "documents",
    "precision",
    "seconds",
    "tokens_per_second",
    "task",
]
# The header of the CSV that eval wrote before tasks and by-document scoring: still an earlier output of eval.
PREVIOUS_CSV_COLUMNS = [c for c in CSV_COLUMNS if c not in ("by_document", "detokenize", "task")]
HEATMAP_DPI = 100


def row_label(result: EvalResult) -> str:
    """The adapter's name, or "base (<model>)" for the model without one."""
    if result.adapter:
        return result.adapter
    return f"base ({Path(str(result.model).rstrip('/')).name or result.model})"


def column_label(result: EvalResult) -> str:
    """A text's label, or "<task> <its first metric>" for a task: what a matrix column shows."""
    return f"{result.dataset} {result.headline[0]}" if result.task else result.dataset


def table(results: list[EvalResult]) -> str:
    """One line per (model, text or task) with every metric; then, for several columns and rows, the
    matrix of perplexities (a task's column: its first metric)."""
    header = ["model", "dataset", "perplexity", "bits/byte", "byte ppl", "word ppl", "tokens", "bytes", "words"]
    lines = [[row_label(r), r.dataset, *_figures(r)] for r in results]
    if any(r.task for r in results):
        header.append("task figures")
        for line, r in zip(lines, results):
            line.append(_task_figures(r) if r.task else "")
    protocols = list(dict.fromkeys(r.protocol for r in results if r.protocol))
    out = [f"protocol: {p.describe()}" for p in protocols]
    if any(r.task for r in results):
        out.append("tasks: lm-evaluation-harness, its own protocol per task")
    out += [f"precision: {results[0].precision}", ""]
    out += _columns([header, *lines], right_from=2)
    rows, columns = _axes(results)
    if len(rows) > 1 and len(columns) > 1:
        cells = {(row_label(r), column_label(r)): r.headline[1] for r in results}
        matrix = [["perplexity", *columns]] + [[row, *(_num(cells.get((row, c))) for c in columns)] for row in rows]
        out += [""] + _columns(matrix, right_from=1)
    return "\n".join(out)


def _figures(r: EvalResult) -> list[str]:
    """The table's figures; a task fills those it reports under the same names."""
    if r.score:
        s = r.score
        return [
            _num(s.perplexity),
            _num(s.bits_per_byte, 4),
            _num(s.byte_perplexity, 4),
            _num(s.word_perplexity),
            f"{s.tokens:,}",
            f"{s.bytes or 0:,}",
            f"{s.words or 0:,}",
        ]
    m = r.task.metrics
    return [
        _num(m.get("perplexity")),
        _num(m.get("bits_per_byte"), 4),
        _num(m.get("byte_perplexity"), 4),
        _num(m.get("word_perplexity")),
        "-",
        "-",
        "-",
    ]


def _task_figures(r: EvalResult) -> str:
    shown = ("perplexity", "bits_per_byte", "byte_perplexity", "word_perplexity")
    parts = []
    for name, value in r.task.metrics.items():
        if name in shown:
            continue
        error = r.task.stderr.get(name)
        parts.append(f"{name} {value:.4f}" + (f" ±{error:.4f}" if error is not None else ""))
    return ", ".join(parts) + f" ({r.documents:,} documents)"


def check_output(path: Path, kind: str, option: str, store_root: Path, overwrite: bool) -> None:
    """Refuse to write an output (`kind`: "csv" or "png") into the store, onto a folder, or over a file that is
    not a previous output of the same kind unless `overwrite`. `option` names the setting."""
    path = Path(path)
    target, store = path.resolve(), Path(store_root).resolve()
    if target == store or store in target.parents:
        raise ToolkitError(
            f"{param(option)}: {path} is inside the adapter store {store_root}; choose a path outside the store"
        )
    if path.is_dir():
        raise ToolkitError(f"{param(option)}: {path} is a folder; name a file")
    if path.exists() and not overwrite and not _is_previous_output(path, kind):
        raise ToolkitError(
            f"{param(option)}: {path} exists and is not a previous {kind.upper()} output of eval; "
            f"pass {param('overwrite', True)} to replace it, or choose another path"
        )


def _is_previous_output(path: Path, kind: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if kind == "csv":
        return head.split(b"\n", 1)[0].rstrip(b"\r") in (
            ",".join(CSV_COLUMNS).encode(),
            ",".join(PREVIOUS_CSV_COLUMNS).encode(),
        )
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


def write_csv(results: list[EvalResult], path: Path) -> None:
    """One row per (model, text or task): the protocol spread into its columns, every metric and count; a
    task's figures as JSON in the `task` column."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        row = r.to_json()
        writer.writerow(
            {
                **row,
                **(row["protocol"] or {}),
                "adapter": r.adapter or "",
                "task": json.dumps(r.task.metrics) if r.task else "",
            }
        )
    write_atomic(path, out.getvalue())


def figure_inches(rows: int, columns: int) -> tuple[float, float]:
    """The heatmap's size: room for row labels and a colour bar, then a fixed size per cell."""
    return 3.5 + 1.6 * columns, 1.6 + 0.55 * rows


def heatmap(results: list[EvalResult], path: Path) -> None:
    """Rows (base, then adapters) x texts, each cell annotated with its perplexity. With a base row the
    colour is each cell's change against the base on the same text (green: lower perplexity), so texts of
    very different difficulty share one scale; without one it is the perplexity itself (log scale)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt
    import numpy as np

    rows, datasets = _axes(results)
    cells = {(row_label(r), column_label(r)): r.headline[1] for r in results}
    ppl = np.array([[_value(cells.get((row, d))) for d in datasets] for row in rows], dtype=float)
    # A figure where higher is better (a task's accuracy) is coloured the other way round.
    better = {column_label(r): -1.0 if r.task and r.task.higher_is_better.get(r.headline[0]) else 1.0 for r in results}
    sign = np.array([better[d] for d in datasets])
    adapters = {r.adapter for r in results if r.adapter}
    bases = [i for i, row in enumerate(rows) if row not in adapters] if adapters else []
    if bases:
        values = sign * np.log2(ppl / ppl[bases[0]])
        limit = max(float(np.nanmax(np.abs(values))), 1e-3)
        style = {"cmap": "RdYlGn_r", "vmin": -limit, "vmax": limit}
        bar_label = "log2(perplexity / base perplexity)" + (" (accuracy: base / row)" if (sign < 0).any() else "")
        dark = lambda shade: abs(shade - 0.5) > 0.35  # both ends of this map are dark
    else:
        values, style, bar_label = np.log10(ppl), {"cmap": "viridis_r"}, "log10(perplexity)"
        dark = lambda shade: shade > 0.6  # viridis_r darkens towards high perplexity

    fig, axis = plt.subplots(figsize=figure_inches(len(rows), len(datasets)), dpi=HEATMAP_DPI)
    image = axis.imshow(values, aspect="auto", **style)
    axis.set_xticks(range(len(datasets)), labels=[_short(d) for d in datasets], rotation=20, ha="right")
    axis.set_yticks(range(len(rows)), labels=[_short(r) for r in rows])
    for i in range(len(rows)):
        for j in range(len(datasets)):
            note = _num(ppl[i, j])
            if bases and i != bases[0]:
                note += f"\n{100 * (ppl[i, j] / ppl[bases[0], j] - 1):+.1f}%"
            color = "white" if dark(float(image.norm(values[i, j]))) else "black"
            axis.text(j, i, note, ha="center", va="center", fontsize=9, color=color)
    fig.colorbar(image, ax=axis, label=bar_label)
    protocol = next((r.protocol for r in results if r.protocol), None)
    axis.set_title("perplexity" + (f", {protocol.label}" if protocol else ""), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp.png"
    try:
        fig.savefig(tmp)  # no bbox_inches="tight": the size stays figure_inches x HEATMAP_DPI
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def _axes(results: list[EvalResult]) -> tuple[list[str], list[str]]:
    rows, columns = [], []
    for r in results:
        if row_label(r) not in rows:
            rows.append(row_label(r))
        if column_label(r) not in columns:
            columns.append(column_label(r))
    return rows, columns


def _value(value) -> float:
    return math.nan if value is None else value


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _short(label: str, width: int = 32) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3) :]


def _columns(lines: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i >= right_from else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    ]
