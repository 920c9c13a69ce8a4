"""`gpt2-adapt export`."""

from __future__ import annotations

import click

from .options import emit_json, writer_options


@click.command()
@click.argument("adapters", nargs=-1, metavar="NAME [NAME=WEIGHT ...]")
@click.option(
    "--mix", metavar="A=W,B=W", help="Export the weighted sum of adapters' updates, e.g. wikitext103=0.7,poems=0.3."
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The folder to write the files to.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(("gguf", "onnx")),
    default="gguf",
    show_default=True,
    help="gguf: for llama.cpp; onnx: the merged model for ONNX Runtime.",
)
@click.option(
    "--type",
    "tensor_type",
    type=click.Choice(("f32", "f16", "bf16", "q8_0")),
    default="f32",
    show_default=True,
    help="GGUF: the type of the weights.",
)
@click.option("--merged", is_flag=True, help="GGUF: also write merged.gguf, the base with the adapter merged in.")
@click.option("--no-base", "no_base", is_flag=True, help="GGUF: leave out base.gguf.")
@click.option("--no-adapter", "no_adapter", is_flag=True, help="GGUF: leave out adapter.gguf (with --merged).")
@writer_options(
    verify="Run every file in llama.cpp or ONNX Runtime and compare its logits with the toolkit's.",
    overwrite="Replace an export folder that exists.",
)
def export(adapters, mix, out, format_, no_base, no_adapter, allow_unverified, as_json, **options) -> None:
    """Export adapters for llama.cpp (GGUF) or ONNX Runtime.

    GGUF writes adapter.gguf (a LoRA for llama.cpp's --lora) and base.gguf (the model to run it on), and with
    --merged also merged.gguf (one model). ONNX writes model.onnx: the merged model, with past key values.
    Several adapters (NAME=WEIGHT, or --mix) export as the exact weighted sum of their updates. Examples:

    \b
        gpt2-adapt export wikitext103 --out export/wikitext103 --verify
        gpt2-adapt export --mix wikitext103=0.7,poems=0.3 --out export/mix --merged --type q8_0
        gpt2-adapt export wikitext103 --format onnx --out export/onnx --verify
    """
    from ..errors import ToolkitError
    from ..exporting.export import export as export_adapters
    from ..modeling.mixing import describe

    if bool(adapters) == bool(mix):
        raise ToolkitError("name the adapters to export (NAME or NAME=WEIGHT ...) or give --mix A=W,B=W, not both")
    # The other options (tensor_type, merged, base, verify, overwrite, store) are the library's parameters.
    result = export_adapters(
        mix or list(adapters),
        out,
        format=format_,
        adapter_file=not no_adapter,
        base_file=not no_base,
        strict=not allow_unverified,
        **options,
    )
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(
            f"exported {describe(result.weights)} on {result.base} ({result.format}, {result.tensor_type}) to "
            f"{result.path}: {', '.join(result.files)}"
        )
        for name in result.full_precision:
            click.echo(f"{name} was trained on a quantized base: exported against the base at full precision")
        for check in result.checks:
            verdict = "ok" if check.passed else "OVER the tolerance"
            what = f" {check.what}" if check.what else ""
            click.echo(
                f"verify: {check.file}{what} in {check.runtime}: logits differ by {check.difference:.2g} of the "
                f"largest logit (tolerance {check.tolerance:g}): {verdict}"
            )
        for reason in result.not_verified:
            click.echo(f"verify: {reason}")
    if any(not check.passed for check in result.checks):
        raise ToolkitError("verify: a file's logits differ from the toolkit's by more than its tolerance (above)")
