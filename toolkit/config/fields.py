"""A setting declared once: its default and its one-line meaning. A recipe's keys are declared so (and their
reference, docs/recipes.md, is derived from them), and so are the settings records from which the command
line's options are derived (toolkit.cli.options.setting_options): each is spelled in one place."""

from __future__ import annotations

from dataclasses import field


def setting(default, help: str, **option):
    """A field of a settings record. `option`: what the derived command-line option needs beyond the type of
    `default` and `help` (an `envvar`, a `metavar`)."""
    metadata = {"help": help, "option": option}
    if isinstance(default, list):  # each record gets a list of its own
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
