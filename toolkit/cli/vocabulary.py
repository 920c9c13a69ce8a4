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


# (command, option removed in 0.3.0) -> what replaces it; CHANGELOG.md has the whole list. Without this, click
# answers a removed option with a guess at the closest option left ("Did you mean '--store'?").
REMOVED = {
    ("train", "--force"): "--allow-changed",
    ("eval", "--force"): "--allow-unverified",
    ("generate", "--force"): "--allow-unverified",
    ("merge", "--force"): "--allow-unverified",
    ("generate", "--dtype"): "--precision (fp32, bf16, fp16)",
    ("merge", "--dtype"): "--precision (fp32, bf16, fp16)",
    ("merge", "--model"): "--base",
}


def removed(command: str, option_name: str) -> str | None:
    """What to say of an option that 0.3.0 removed from `command` (None: it never existed)."""
    replacement = REMOVED.get((command, option_name))
    return replacement and f"{option_name} was removed in 0.3.0; use {replacement} (see CHANGELOG.md)"
