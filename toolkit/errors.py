"""The one exception type for problems a user can fix, and how its messages name what the user sets.

The library never spells a command-line option. A message names a parameter with `param("overwrite", True)`:
it reads `overwrite=True` where the error reaches Python code, and `--overwrite` where the CLI prints it
(the CLI owns that mapping, `toolkit.cli.vocabulary`). The CLI prints each problem as one line and exits
with the error's `exit_code` (2); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# A parameter inside a message: NUL, its name, optionally "=" and the value's repr, NUL. NUL never
# occurs in the text around it, and a message is always spelled out before anyone reads it.
_PARAM = re.compile(r"\x00([A-Za-z_]+)(?:=([^\x00]*))?\x00")

Spelling = Callable[[str, "str | None"], str]


def param(name: str, value=None) -> str:
    """How a message names a parameter the user sets (`value`: the setting the fix asks for)."""
    return f"\x00{name}\x00" if value is None else f"\x00{name}={value!r}\x00"


def python_spelling(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


def spell_parameters(text: str, spelling: Spelling = python_spelling) -> str:
    return _PARAM.sub(lambda m: spelling(m.group(1), m.group(2)), text)


class ToolkitError(Exception):
    """A problem with the user's input or environment, described so that they can fix it."""

    exit_code = 2

    def __init__(self, *problems: str):
        self.raw = [p for p in problems if p]  # with parameter placeholders; see spell_parameters()
        super().__init__("\n".join(self.problems))

    @property
    def problems(self) -> list[str]:
        """One line per problem, parameters spelled as Python names them."""
        return [spell_parameters(p) for p in self.raw]

    def spelled(self, spelling: Spelling) -> list[str]:
        """One line per problem, parameters spelled by `spelling` (the CLI's options)."""
        return [spell_parameters(p, spelling) for p in self.raw]

    def prefixed(self, prefix: str) -> ToolkitError:
        """The same problems, each put after `prefix` (the name of the text or file they were found in)."""
        return type(self)(*(prefix + p for p in self.raw))


def first_line(err: BaseException) -> str:
    """A library exception's message cut to its first line, for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
