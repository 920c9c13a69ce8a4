"""`gpt2-adapt eval`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from . import main, store_option


@main.command("eval")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME", help="An adapter in the store (repeatable); the base is scored beside them.")
@click.option("--model", metavar="ID_OR_DIR", help="A plain model (hub id, or a folder: a base or a merged adapter); with --adapter, the base to load them on.")
@click.option("--recipe", "recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False), help="Score on a recipe's evaluation text (its block size is the default context).")
@click.option("--dataset", "datasets", multiple=True, metavar="ID_OR_PATH", help="A hub id, save_to_disk folder or builtin:python-docs (repeatable).")
@click.option("--config", default="", help="The datasets' configuration name, e.g. wikitext-2-raw-v1.")
@click.option("--split", default="", help="The datasets' split [default: test, else validation].")
@click.option("--text-column", default="text", show_default=True, help="The column holding the text (datasets and non-txt files).")
@click.option("--files", multiple=True, metavar="PATH_OR_GLOB", help="Local txt/json/jsonl/csv/parquet files; each --files is one text (repeatable).")
@click.option("--context", type=int, help="Tokens per window [default: the recipe's block size, else the model's context].")
@click.option("--stride", type=int, help="Sliding window: tokens between window starts [default: the context, i.e. disjoint blocks].")
@click.option("--max-tokens", type=int, help="Score only the first N tokens of each text (a quick estimate).")
@click.option("--batch-size", type=int, default=0, help="Windows per forward pass [default 0: automatic].")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="Weights of a full-precision base.")
@click.option("--int8", is_flag=True, help="Load the base in 8-bit (bitsandbytes).")
@click.option("--force", is_flag=True, help="Score an adapter that fails verification against its base (with a warning).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of results.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the results as CSV (and a heatmap beside it).")
@click.option("--heatmap", "heatmap_path", type=click.Path(dir_okay=False), help="Write the rows x texts heatmap PNG here [default: beside --csv].")
@store_option
def eval_cmd(adapters, model, recipe_path, datasets, config, split, text_column, files, context, stride, max_tokens,
             batch_size, precision, int8, force, as_json, csv_path, heatmap_path, store) -> None:
    """Perplexity of adapters, their base, or any GPT-2 model, on any text, by a stated protocol.

    Reports token perplexity, bits per byte, byte and word perplexity, and what was counted. Several
    --adapter and several texts give a matrix (plus the base row). Examples:

        gpt2-adapt eval --recipe recipes/quickstart.toml --adapter quickstart

        gpt2-adapt eval --model gpt2 --files 'notes/*.txt' --stride 512 --json
    """
    from .. import eval_report
    from ..eval_run import EvalOptions, read_texts, run

    options = EvalOptions(
        context=context, stride=stride, max_tokens=max_tokens, batch_size=batch_size, precision=precision,
        int8=int8, strict=not force, progress=logging.getLogger("toolkit").isEnabledFor(logging.INFO),
    )
    recipe = None
    if recipe_path:
        from ..recipe import load_recipe

        recipe = load_recipe(recipe_path)
    texts = read_texts(recipe, recipe_path or "", datasets, config, split, text_column, files)
    results = run(
        texts, options, adapters=adapters, model=model or (recipe.model.name if recipe and not adapters else None),
        store=store, default_context=recipe.data.block_size if recipe else None,
    )
    if csv_path:
        eval_report.write_csv(results, Path(csv_path))
    heatmap_path = heatmap_path or (str(Path(csv_path).with_suffix(".png")) if csv_path else None)
    if heatmap_path:
        eval_report.heatmap(results, Path(heatmap_path))
    click.echo(json.dumps(results, indent=2) if as_json else eval_report.table(results))
