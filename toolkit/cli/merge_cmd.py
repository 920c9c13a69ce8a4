"""`gpt2-adapt merge`."""

from __future__ import annotations

import click

from ..modeling.precision import FULL_PRECISIONS
from .options import emit_json, writer_options


@click.command()
@click.argument("adapters", nargs=-1, required=True, metavar="NAME [NAME=WEIGHT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The model folder to write.")
@click.option(
    "--precision",
    type=click.Choice(FULL_PRECISIONS),
    help="Of the saved weights [default: the base checkpoint's own].",
)
@writer_options(
    verify="Compare the saved model's logits with the unmerged adapters' and print the largest difference.",
    overwrite="Replace a model folder that exists.",
)
def merge(adapters, allow_unverified, as_json, **options) -> None:
    """Merge adapters into their base: a standalone model folder that transformers loads without peft.

    One adapter merges as it is; several (NAME=WEIGHT, a bare NAME weighing 1) merge as the exact weighted
    sum of their updates. An adapter trained on a quantized (int8, nf4, fp4) base is merged into the base
    reloaded at full precision. Examples:

    \b
        gpt2-adapt merge wikitext103 --out merged/wikitext103
        gpt2-adapt merge wikitext103=0.7 poems=0.3 --out merged/mix --precision bf16 --verify
    """
    from ..generation.merging import VERIFY_BATCHES, VERIFY_ROWS
    from ..generation.merging import merge as merge_adapters
    from ..modeling.mixing import describe

    # The other options (out, precision, base, verify, overwrite, store) are the library's parameters.
    result = merge_adapters(list(adapters), strict=not allow_unverified, **options)
    if as_json:
        emit_json(result.to_json())
        return
    click.echo(f"merged {describe(result.weights)} into {result.base} ({result.precision}): {result.path}")
    for name in result.full_precision:
        click.echo(
            f"{name} was trained on a quantized base: merged into the base reloaded at full precision (exact), "
            "not into its quantized weights"
        )
    if result.max_difference is not None:
        click.echo(
            f"verify: largest logit difference, saved model vs unmerged adapters: {result.max_difference:.3g} "
            f"({VERIFY_BATCHES} batches of {VERIFY_ROWS} rows)"
        )
