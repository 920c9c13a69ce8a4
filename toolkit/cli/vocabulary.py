"""The command line's words for the library's parameters.

The library names a parameter in its messages (`overwrite`, `strict`, `context`, ...); the CLI prints the
option that sets it. Most are the parameter's name as an option (`context` -> `--context`); the table
holds the others.
"""

from __future__ import annotations

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
