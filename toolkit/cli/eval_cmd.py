"""`gpt2-adapt eval`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import click

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
    refuse_model_with_adapters,
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
    "recipe_path",
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
@click.option("--limit", type=int, help="Only the first N documents of each text and each task.")
@click.option(
    "--context",
    type=int,
    help="Positions per window [default: the recipe's block size, else the examples' adapter's, "
    "else the model's context].",
)
@click.option(
    "--stride",
    type=int,
    help="Sliding windows: tokens between window starts [default: the context, i.e. disjoint windows].",
)
@click.option(
    "--by-document",
    is_flag=True,
    help="Score each document on its own, as lm-evaluation-harness does [default: one stream].",
)
@click.option(
    "--detokenize",
    metavar="NAME",
    help="Rewrite the scored text first: wikitext (words and bytes are counted on the original).",
)
@click.option("--max-tokens", type=int, help="Score only the first N tokens of each text (a quick estimate).")
@click.option("--batch-size", type=int, default=0, help="Windows per forward pass [default 0: automatic].")
@threads_option
@click.option(
    "--as-text",
    is_flag=True,
    help="Score prompt/completion adapters on plain text (--text-column, every token) instead of examples.",
)
@precision_option(
    None,
    "Load the base in this precision (int8, nf4, fp4: bitsandbytes 8-bit or 4-bit) [default: with "
    "--recipe, its base quantized as training quantized it; else fp32].",
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
def eval_cmd(
    adapters,
    mix,
    base,
    model,
    recipe_path,
    overrides,
    datasets,
    config,
    split,
    text_column,
    files,
    tasks,
    include_paths,
    limit,
    context,
    stride,
    by_document,
    detokenize,
    max_tokens,
    batch_size,
    threads,
    as_text,
    precision,
    int8,
    nf4,
    allow_unverified,
    as_json,
    csv_path,
    heatmap_path,
    overwrite,
    store,
) -> None:
    """Perplexity of adapters, their base, a mix or any GPT-2 model, on any text, by a stated protocol;
    and lm-evaluation-harness tasks on the same rows.

    Reports token perplexity, bits per byte, byte and word perplexity, and what was counted: every token of
    the text scored exactly once. Several --adapter and several texts or tasks give a matrix (plus the base
    row). Under torchrun the windows are shared among the processes. Examples:

        gpt2-adapt eval --recipe recipes/quickstart.toml --adapter quickstart

        gpt2-adapt eval --model gpt2 --files 'notes/*.txt' --stride 512 --json

        gpt2-adapt eval --adapter poems --task wikitext --task hellaswag --limit 100
    """
    from ..distributed import launched
    from ..errors import ToolkitError
    from ..evaluation import report
    from ..evaluation.harness import prepare_tasks
    from ..evaluation.run import EvalOptions, examples_format, load_models, read_texts, run
    from ..store.store import AdapterStore

    refuse_model_with_adapters(model, adapters, mix)
    if model and base:
        raise ToolkitError(
            "--model and --base: --model scores a plain model, --base is the base of --adapter; give one"
        )
    if overrides and not recipe_path:
        raise ToolkitError("--set: changes a recipe's keys; give --recipe too, or drop --set")
    options = EvalOptions(
        context=context,
        stride=stride,
        by_document=by_document,
        detokenize=detokenize,
        max_tokens=max_tokens,
        limit=limit,
        batch_size=batch_size,
        precision=precision_from_flags(precision, int8, nf4),
        strict=not allow_unverified,
        as_text=as_text,
        progress=logging.getLogger("toolkit").isEnabledFor(logging.INFO),
        threads=threads,
    )
    weights = _mix_weights(mix)
    adapter_store = AdapterStore(store)
    heatmap_path = heatmap_path or (str(Path(csv_path).with_suffix(".png")) if csv_path else None)
    for path, kind, name in ((csv_path, "csv", "csv"), (heatmap_path, "png", "heatmap")):
        if path:  # before anything is scored
            report.check_output(Path(path), kind, name, adapter_store.root, overwrite)
    recipe = None
    if recipe_path:
        from ..config.recipe import load_recipe

        recipe = load_recipe(recipe_path, overrides)
    options = options.settled(recipe)
    if not (recipe or datasets or files or tasks):  # before the adapters are read for their format
        raise ToolkitError("no text to score: give --recipe, --dataset, --files or --task")
    texts = read_texts(
        recipe,
        recipe_path or "",
        datasets,
        config,
        split,
        text_column,
        files,
        examples=None if as_text else examples_format([*adapters, *weights], adapter_store),
        as_text=as_text,
    )
    if include_paths and not tasks:
        raise ToolkitError("--include-path: adds a folder of harness tasks; name the tasks with --task")
    found = prepare_tasks(tasks, include_paths) if tasks else None
    with launched() as rank:
        loaded = load_models(
            list(dict.fromkeys([*adapters, *weights])),
            model or base or (recipe.model.name if recipe and not adapters and not mix else None),
            adapter_store,
            options.strict,
            options.precision,
        )
        if mix:
            from ..generation.mixing import describe
            from ..generation.mixing import mix as mix_adapters

            loaded = dataclasses.replace(loaded, rows=(None, *adapters))
            loaded = loaded.with_row(mix_adapters(loaded.model, weights), f"mix {describe(weights)}")
        results = run(loaded, options, texts, found, default_context=recipe.data.block_size if recipe else None)
    if rank != 0:
        return  # every process holds the same figures; the first reports them
    if csv_path:
        report.write_csv(results, Path(csv_path))
    if heatmap_path:
        report.heatmap(results, Path(heatmap_path))
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        click.echo(report.table(results))


def _mix_weights(mix: str | None) -> dict[str, float]:
    if not mix:
        return {}
    from ..generation.mixing import parse_weights

    return parse_weights(mix, label="--mix")
