"""`gpt2-adapt merge`."""

from __future__ import annotations

import click

from .options import (
    allow_unverified_option,
    base_option,
    emit_json,
    force_option,
    json_option,
    resolve_allow_unverified,
    resolve_base,
    store_option,
)
from .vocabulary import deprecated

OUTPUT_PRECISIONS = ("fp32", "bf16", "fp16")


@click.command()
@click.argument("adapters", nargs=-1, required=True, metavar="NAME [NAME=WEIGHT ...]")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The model folder to write.")
@click.option(
    "--precision",
    type=click.Choice(OUTPUT_PRECISIONS),
    help="Of the saved weights [default: the base checkpoint's own].",
)
@click.option("--dtype", type=click.Choice(("float32", "float16", "bfloat16")), hidden=True)
@base_option
@click.option("--model", hidden=True)
@click.option(
    "--verify",
    is_flag=True,
    help="Compare the saved model's logits with the unmerged adapters' and print the largest difference.",
)
@click.option("--overwrite", is_flag=True, help="Replace a model folder that exists.")
@allow_unverified_option
@force_option
@json_option
@store_option
def merge(
    adapters, out, precision, dtype, base, model, verify, overwrite, allow_unverified, force, as_json, store
) -> None:
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

    if dtype:
        precision = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
        deprecated(f"--dtype {dtype}", f"--precision {precision}")
    base, _ = resolve_base(base, model, adapters)
    result = merge_adapters(
        list(adapters),
        out,
        precision=precision,
        base=base,
        store=store,
        strict=not resolve_allow_unverified(allow_unverified, force),
        verify=verify,
        overwrite=overwrite,
    )
    if as_json:
        emit_json(
            {
                "path": str(result.path),
                "weights": result.weights,
                "base": result.base,
                "precision": result.precision,
                "full_precision": result.full_precision,
                "max_difference": result.max_difference,
            }
        )
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
