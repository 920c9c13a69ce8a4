"""`gpt2-adapt eval`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..evaluation.settings import EvalOptions
from .options import (
    allow_unverified_option,
    base_option,
    emit_json,
    int8_option,
    json_option,
    nf4_option,
    overrides_option,
    precision_from_flags,
    precision_option,
    setting_options,
    store_option,
    threads_option,
)


@click.command("eval")
@click.option(
    "--adapter",
    "adapters",
    multiple=True,
    metavar="NAME",
    help="An adapter in the store (repeatable); the base is scored beside them.",
)
@click.option(
    "--mix",
    metavar="A=W,B=W",
    help="Also score the weighted sum of stored adapters' updates, e.g. wikitext103=0.7,poems=0.3.",
)
@base_option
@click.option(
    "--model",
    metavar="ID_OR_DIR",
    help="A plain model instead of adapters: a hub id, or a folder (a base, a merged adapter).",
)
@click.option(
    "--recipe",
    metavar="RECIPE",
    type=click.Path(dir_okay=False),
    help="Score on a recipe's evaluation text (its block size is the default context).",
)
@overrides_option
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="ID_OR_PATH",
    help="A hub id, save_to_disk folder or builtin:python-docs (repeatable).",
)
@click.option("--config", default="", help="The datasets' configuration name, e.g. wikitext-2-raw-v1.")
@click.option("--split", default="", help="The datasets' split [default: test, else validation].")
@click.option(
    "--text-column", default="text", show_default=True, help="The column holding the text (datasets and non-txt files)."
)
@click.option(
    "--files",
    multiple=True,
    metavar="PATH_OR_GLOB",
    help="Local txt/json/jsonl/csv/parquet files; each --files is one text (repeatable).",
)
@click.option(
    "--task",
    "tasks",
    multiple=True,
    metavar="NAME",
    help="An lm-evaluation-harness task, e.g. wikitext, lambada_openai, hellaswag (repeatable).",
)
@click.option(
    "--include-path",
    "include_paths",
    multiple=True,
    metavar="DIR",
    help="A folder of harness task YAML files of your own (repeatable).",
)
@setting_options(
    EvalOptions,
    threads=threads_option,
    precision=precision_option(
        None,
        "Load the base in this precision (int8, nf4, fp4: bitsandbytes 8-bit or 4-bit) [default: with "
        "--recipe, its base quantized as training quantized it; else fp32].",
    ),
    strict=None,  # --allow-unverified
    progress=None,  # shown when the log shows progress
)
@int8_option
@nf4_option
@allow_unverified_option
@json_option
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False),
    help="Also write the results as CSV (and a heatmap beside it).",
)
@click.option(
    "--heatmap",
    "heatmap_path",
    type=click.Path(dir_okay=False),
    help="Write the rows x texts heatmap PNG here [default: beside --csv].",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace existing --csv/--heatmap files that are not earlier outputs of eval."
)
@store_option
def eval_cmd(int8, nf4, allow_unverified, as_json, csv_path, heatmap_path, overwrite, **values) -> None:
    """Perplexity of adapters, their base, a mix or any GPT-2 model, on any text, by a stated protocol;
    and lm-evaluation-harness tasks on the same rows.

    Reports token perplexity, bits per byte, byte and word perplexity, and what was counted: every token of
    the text scored exactly once. Several --adapter and several texts or tasks give a matrix (plus the base
    row). Under torchrun the windows are shared among the processes. Examples:

        gpt2-adapt eval --recipe recipes/quickstart.toml --adapter quickstart

        gpt2-adapt eval --model gpt2 --files 'notes/*.txt' --stride 512 --json

        gpt2-adapt eval --adapter poems --task wikitext --task hellaswag --limit 100
    """
    from ..distributed import is_main_process
    from ..evaluation import report
    from ..evaluation.evaluate import evaluate
    from ..store.store import AdapterStore

    values.update(
        precision=precision_from_flags(values["precision"], int8, nf4),
        strict=not allow_unverified,
        progress=logging.getLogger("toolkit").isEnabledFor(logging.INFO),
    )
    heatmap_path = heatmap_path or (str(Path(csv_path).with_suffix(".png")) if csv_path else None)
    for path, kind, name in ((csv_path, "csv", "csv"), (heatmap_path, "png", "heatmap")):
        if path:  # before anything is scored
            report.check_output(Path(path), kind, name, AdapterStore(values["store"]).root, overwrite)
    results = evaluate(**values)  # the options are evaluate's parameters and EvalOptions' fields
    if not is_main_process():
        return  # every process holds the same figures; the first reports them
    if csv_path:
        report.write_csv(results, Path(csv_path))
    if heatmap_path:
        report.heatmap(results, Path(heatmap_path))
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        click.echo(report.table(results))
