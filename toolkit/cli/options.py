"""Options that several commands share, spelled and explained once."""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, fields

import click

from ..errors import ToolkitError, spell_parameters
from ..modeling.precision import LOAD_PRECISIONS
from .vocabulary import option

store_option = click.option(
    "--store",
    type=click.Path(file_okay=False),
    help="Adapter store folder [default: $GPT2_ADAPT_STORE, else ./adapters].",
)
overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key, e.g. --set lora.r=8 (repeatable; type-checked like the file).",
)
threads_option = click.option(
    "--threads",
    type=int,
    default=0,
    show_default=True,
    help="CPU threads to compute with; 0: chosen from the cores and their load (see docs/speed.md).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, for scripts.")
base_option = click.option("--base", metavar="ID_OR_DIR", help="A local copy of the adapters' base (hub id or folder).")
allow_unverified_option = click.option(
    "--allow-unverified", is_flag=True, help="Load adapters that fail verification against their base (with a warning)."
)


def writer_options(verify: str, overwrite: str):
    """The options that `merge` and `export` share, in their --help order: each writes files from adapters,
    optionally checked against the unmerged adapters (`verify`: what the check does)."""
    options = [
        base_option,
        click.option("--verify", is_flag=True, help=verify),
        click.option("--overwrite", is_flag=True, help=overwrite),
        allow_unverified_option,
        json_option,
        store_option,
    ]

    def decorate(command):
        for add in reversed(options):  # as stacked decorators apply: the last one first
            command = add(command)
        return command

    return decorate


def precision_option(
    default: str | None = "fp32",
    help_text: str = "Load the base in this precision (int8, nf4, fp4: bitsandbytes 8-bit or 4-bit).",
):
    return click.option(
        "--precision",
        type=click.Choice(LOAD_PRECISIONS),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


int8_option = click.option("--int8", is_flag=True, help="Short for --precision int8.")
nf4_option = click.option("--nf4", is_flag=True, help="Short for --precision nf4.")


def precision_from_flags(precision: str | None, int8: bool, nf4: bool = False) -> str | None:
    """--precision, or what its shorthands --int8 and --nf4 say."""
    if int8 and nf4:
        raise ToolkitError("--int8 and --nf4: choose one precision")
    return "int8" if int8 else "nf4" if nf4 else precision


def emit_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def setting_options(record, **shared):
    """The options of a settings record's fields (toolkit.config.fields.setting): `--max-body` for
    `max_body`, typed by the field's annotation, with its help (parameters it names spelled as options); a
    bool field is a flag, a tuple field repeatable. `shared`: fields whose option several commands spell
    alike (`store=store_option`), or None for a field with no option."""
    hints = typing.get_type_hints(record)

    def decorate(command):
        for f in reversed(fields(record)):
            if f.name in shared:
                command = shared[f.name](command) if shared[f.name] is not None else command
                continue
            default = None if f.default is MISSING else f.default
            kwargs = {"help": spell_parameters(f.metadata["help"], option)}
            if isinstance(default, tuple):
                kwargs.update(multiple=True)
            elif isinstance(default, bool):
                kwargs.update(is_flag=True, default=default)
            else:
                kwargs.update(type=_scalar(hints[f.name]), default=default, show_default=default is not None)
            kwargs.update(f.metadata.get("option", {}))
            command = click.option("--" + f.name.replace("_", "-"), f.name, **kwargs)(command)
        return command

    return decorate


def _scalar(hint):
    """int for `int` and for `int | None`."""
    return next(arg for arg in typing.get_args(hint) or (hint,) if arg is not type(None))


def settings_from(record, values: dict):
    """The settings record of a command's parsed options (those that are not the record's are left out)."""
    return record(**{f.name: values[f.name] for f in fields(record) if f.name in values})
