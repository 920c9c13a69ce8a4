"""`gpt2-adapt eval`."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import (
    allow_unverified_option,
    base_option,
    emit_json,
    force_option,
    int8_option,
    nf4_option,
    json_option,
    overrides_option,
    precision_option,
    resolve_allow_unverified,
    resolve_base,
    resolve_precision_flags,
    store_option,
)


@click.command("eval")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME", help="An adapter in the store (repeatable); the base is scored beside them.")
@base_option
@click.option("--model", metavar="ID_OR_DIR", help="A plain model instead of adapters: a hub id, or a folder (a base, a merged adapter).")
@click.option("--recipe", "recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False), help="Score on a recipe's evaluation text (its block size is the default context).")
@overrides_option
@click.option("--dataset", "datasets", multiple=True, metavar="ID_OR_PATH", help="A hub id, save_to_disk folder or builtin:python-docs (repeatable).")
@click.option("--config", default="", help="The datasets' configuration name, e.g. wikitext-2-raw-v1.")
@click.option("--split", default="", help="The datasets' split [default: test, else validation].")
@click.option("--text-column", default="text", show_default=True, help="The column holding the text (datasets and non-txt files).")
@click.option("--files", multiple=True, metavar="PATH_OR_GLOB", help="Local txt/json/jsonl/csv/parquet files; each --files is one text (repeatable).")
@click.option("--context", type=int, help="Tokens per window [default: the recipe's block size, else the model's context].")
@click.option("--stride", type=int, help="Sliding window: tokens between window starts [default: the context, i.e. disjoint blocks].")
@click.option("--max-tokens", type=int, help="Score only the first N tokens of each text (a quick estimate).")
@click.option("--batch-size", type=int, default=0, help="Windows per forward pass [default 0: automatic].")
@precision_option()
@int8_option
@nf4_option
@allow_unverified_option
@force_option
@json_option
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the results as CSV (and a heatmap beside it).")
@click.option("--heatmap", "heatmap_path", type=click.Path(dir_okay=False), help="Write the rows x texts heatmap PNG here [default: beside --csv].")
@click.option("--overwrite", is_flag=True, help="Replace existing --csv/--heatmap files that are not earlier outputs of eval.")
@store_option
def eval_cmd(adapters, base, model, recipe_path, overrides, datasets, config, split, text_column, files, context, stride,
             max_tokens, batch_size, precision, int8, nf4, allow_unverified, force, as_json, csv_path, heatmap_path, overwrite,
             store) -> None:
    """Perplexity of adapters, their base, or any GPT-2 model, on any text, by a stated protocol.

    Reports token perplexity, bits per byte, byte and word perplexity, and what was counted. Several
    --adapter and several texts give a matrix (plus the base row). Examples:

        gpt2-adapt eval --recipe recipes/quickstart.toml --adapter quickstart

        gpt2-adapt eval --model gpt2 --files 'notes/*.txt' --stride 512 --json
    """
    from ..errors import ToolkitError
    from ..evaluation import report
    from ..evaluation.run import EvalOptions, examples_format, read_texts, run
    from ..store.store import AdapterStore

    base, model = resolve_base(base, model, adapters)
    if model and base:
        raise ToolkitError("--model and --base: --model scores a plain model, --base is the base of --adapter; give one")
    if overrides and not recipe_path:
        raise ToolkitError("--set: changes a recipe's keys; give --recipe too, or drop --set")
    options = EvalOptions(
        context=context, stride=stride, max_tokens=max_tokens, batch_size=batch_size,
        precision=resolve_precision_flags(precision, int8, nf4=nf4), strict=not resolve_allow_unverified(allow_unverified, force),
        progress=logging.getLogger("toolkit").isEnabledFor(logging.INFO),
    )
    adapter_store = AdapterStore(store)
    heatmap_path = heatmap_path or (str(Path(csv_path).with_suffix(".png")) if csv_path else None)
    for path, kind, name in ((csv_path, "csv", "csv"), (heatmap_path, "png", "heatmap")):
        if path:  # before anything is scored
            report.check_output(Path(path), kind, name, adapter_store.root, overwrite)
    recipe = None
    if recipe_path:
        from ..config.recipe import load_recipe

        recipe = load_recipe(recipe_path, overrides)
    texts = read_texts(recipe, recipe_path or "", datasets, config, split, text_column, files,
                       examples=examples_format(adapters, adapter_store))
    results = run(
        texts, options, adapters=adapters,
        model=model or base or (recipe.model.name if recipe and not adapters else None),
        store=adapter_store, default_context=recipe.data.block_size if recipe else None,
    )
    if csv_path:
        report.write_csv(results, Path(csv_path))
    if heatmap_path:
        report.heatmap(results, Path(heatmap_path))
    if as_json:
        emit_json([r.to_json() for r in results])
    else:
        click.echo(report.table(results))
