"""`gpt2-adapt merge`."""

from __future__ import annotations

import click

from . import main, store_option


@main.command()
@click.argument("adapters", nargs=-1, required=True, metavar="NAME [NAME=WEIGHT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The model folder to write.")
@click.option("--dtype", type=click.Choice(("float32", "float16", "bfloat16")), help="Of the saved weights [default: the base checkpoint's own].")
@click.option("--model", metavar="ID_OR_DIR", help="A local copy of the adapters' base.")
@click.option("--verify", is_flag=True, help="Compare the saved model's logits with the unmerged adapters' and print the largest difference.")
@click.option("--overwrite", is_flag=True, help="Replace a model folder that exists.")
@click.option("--force", is_flag=True, help="Merge adapters that fail verification against their base (with a warning).")
@store_option
def merge(adapters, out, dtype, model, verify, overwrite, force, store) -> None:
    """Merge adapters into their base: a standalone model folder that transformers loads without peft.

    One adapter merges as it is; several (NAME=WEIGHT, a bare NAME weighing 1) merge as the exact weighted
    sum of their updates. An adapter trained on an 8-bit base is merged into the base reloaded at full
    precision. Examples:

    \b
        gpt2-adapt merge wikitext103 --out merged/wikitext103
        gpt2-adapt merge wikitext103=0.7 poems=0.3 --out merged/mix --dtype bfloat16 --verify
    """
    from ..merging import VERIFY_BATCHES, VERIFY_ROWS, merge as merge_adapters
    from ..mixing import describe

    result = merge_adapters(
        list(adapters), out, dtype=dtype, base=model, store=store, strict=not force, verify=verify, overwrite=overwrite,
    )
    click.echo(f"merged {describe(result.weights)} into {result.base} ({result.dtype}): {result.path}")
    for name in result.full_precision:
        click.echo(f"{name} was trained on an 8-bit base: merged into the base reloaded at full precision (exact), "
                   "not into its 8-bit weights")
    if result.max_difference is not None:
        click.echo(f"verify: largest logit difference, saved model vs unmerged adapters: {result.max_difference:.3g} "
                   f"({VERIFY_BATCHES} batches of {VERIFY_ROWS} rows)")
