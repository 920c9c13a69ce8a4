"""A setting declared once: its default and its one-line meaning, from which the command line's option is
derived (toolkit.cli.options.setting_options), so that a settings record is the only place it is spelled."""

from __future__ import annotations

from dataclasses import field


def setting(default, help: str, **option):
    """A field of a settings record. `option`: what the derived command-line option needs beyond the type of
    `default` and `help` (an `envvar`, a `metavar`)."""
    return field(default=default, metadata={"help": help, "option": option})
