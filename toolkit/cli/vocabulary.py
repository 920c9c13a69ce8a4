"""The command line's words for the library's parameters, and the older spellings that still work.

The library names a parameter in its messages (`overwrite`, `strict`, `context`, ...); the CLI prints the
option that sets it. Most are the parameter's name as an option (`context` -> `--context`); the table
holds the others.
"""

from __future__ import annotations

import click

OPTIONS = {
    "strict": "--allow-unverified",  # strict=False: load adapters that fail verification
    "adapters": "--adapter",
    "datasets": "--dataset",
    "overrides": "--set",
    "texts": "--prompt",
    "tasks": "--task",
    "include_paths": "--include-path",
    "tensor_type": "--type",
    "adapter_file": "--no-adapter",  # adapter_file=False
    "base_file": "--no-base",  # base_file=False
}


def option(name: str, value: str | None = None) -> str:
    """The option that sets parameter `name` (`value`: the setting a message asks for, which the option's
    presence already says)."""
    return OPTIONS.get(name, "--" + name.replace("_", "-"))


def deprecated(old: str, new: str) -> None:
    """Tell the user an option they gave has a new spelling; it works as before for this release."""
    click.echo(click.style("warning:", fg="yellow", bold=True) + f" {old} is deprecated; use {new}", err=True)
