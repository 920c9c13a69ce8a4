"""What `gpt2-adapt eval` shows and writes: a table a person reads, a CSV for scripts, a heatmap PNG.

An output file is never written into the adapter store, and an existing file is replaced only when it is a
previous output of the same kind (a CSV with this header, a PNG drawn by matplotlib) or when asked.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..errors import ToolkitError, param
from ..files import write_atomic
from ..records import EvalResult
from .protocol import describe

CSV_COLUMNS = [
    "model", "adapter", "dataset", "kind", "context", "stride", "perplexity", "bits_per_byte",
    "byte_perplexity", "word_perplexity", "mean_nll", "tokens", "bytes", "words", "documents", "precision",
    "seconds", "tokens_per_second",
]
HEATMAP_DPI = 100


def row_label(result: EvalResult) -> str:
    """The adapter's name, or "base (<model>)" for the model without one."""
    if result.adapter:
        return result.adapter
    return f"base ({Path(str(result.model).rstrip('/')).name or result.model})"


def table(results: list[EvalResult]) -> str:
    """One line per (model, text) with every metric; then, for several texts and rows, the perplexity
    matrix with one column per text."""
    header = ["model", "dataset", "perplexity", "bits/byte", "byte ppl", "word ppl", "tokens", "bytes", "words"]
    lines = [[
        row_label(r), r.dataset, _num(r.score.perplexity), _num(r.score.bits_per_byte, 4),
        _num(r.score.byte_perplexity, 4), _num(r.score.word_perplexity), f"{r.score.tokens:,}",
        f"{r.score.bytes or 0:,}", f"{r.score.words or 0:,}",
    ] for r in results]
    out = [f"protocol: {describe(results[0].protocol)}; precision {results[0].precision}", ""]
    out += _columns([header, *lines], right_from=2)
    rows, datasets = _axes(results)
    if len(rows) > 1 and len(datasets) > 1:
        cells = {(row_label(r), r.dataset): r.score.perplexity for r in results}
        matrix = [["perplexity", *datasets]] + [[row, *(_num(cells[row, d]) for d in datasets)] for row in rows]
        out += [""] + _columns(matrix, right_from=1)
    return "\n".join(out)


def check_output(path: Path, kind: str, option: str, store_root: Path, overwrite: bool) -> None:
    """Refuse to write an output (`kind`: "csv" or "png") into the store, onto a folder, or over a file that is
    not a previous output of the same kind unless `overwrite`. `option` names the setting."""
    path = Path(path)
    target, store = path.resolve(), Path(store_root).resolve()
    if target == store or store in target.parents:
        raise ToolkitError(f"{param(option)}: {path} is inside the adapter store {store_root}; choose a path outside the store")
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
        return head.split(b"\n", 1)[0].rstrip(b"\r") == ",".join(CSV_COLUMNS).encode()
    return head.startswith(b"\x89PNG") and b"Matplotlib" in head


def write_csv(results: list[EvalResult], path: Path) -> None:
    """One row per (model, text): the protocol spread into kind/context/stride, every metric and count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in results:
        row = r.to_json()
        writer.writerow({**row, **row["protocol"], "adapter": r.adapter or ""})
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
    cells = {(row_label(r), r.dataset): r.score.perplexity for r in results}
    ppl = np.array([[cells[row, d] for d in datasets] for row in rows], dtype=float)
    adapters = {r.adapter for r in results if r.adapter}
    bases = [i for i, row in enumerate(rows) if row not in adapters] if adapters else []
    if bases:
        values = np.log2(ppl / ppl[bases[0]])
        limit = max(float(np.nanmax(np.abs(values))), 1e-3)
        style = {"cmap": "RdYlGn_r", "vmin": -limit, "vmax": limit}
        bar_label = "log2(perplexity / base perplexity)"
        dark = lambda shade: abs(shade - 0.5) > 0.35  # noqa: E731  both ends of this map are dark
    else:
        values, style, bar_label = np.log10(ppl), {"cmap": "viridis_r"}, "log10(perplexity)"
        dark = lambda shade: shade > 0.6  # noqa: E731  viridis_r darkens towards high perplexity

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
    axis.set_title(f"perplexity, {describe(results[0].protocol)}", fontsize=10)
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
    rows, datasets = [], []
    for r in results:
        if row_label(r) not in rows:
            rows.append(row_label(r))
        if r.dataset not in datasets:
            datasets.append(r.dataset)
    return rows, datasets


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _short(label: str, width: int = 32) -> str:
    return label if len(label) <= width else "..." + label[-(width - 3):]


def _columns(lines: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(cell.rjust(w) if i >= right_from else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
        for line in lines
    ]
