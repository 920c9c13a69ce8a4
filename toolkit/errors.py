"""The one exception type for problems a user can fix.

The CLI prints its message (one line per problem) and exits with code 2; any other exception is a bug
and keeps its traceback.
"""


class ToolkitError(Exception):
    """A problem with the user's input or environment, described so that they can fix it."""

    def __init__(self, *problems: str):
        self.problems = [p for p in problems if p]
        super().__init__("\n".join(self.problems))


def first_line(err: BaseException) -> str:
    """A library exception's message cut to its first line, for a one-line error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
