"""Adapter names: what a valid one is, and the one a recipe gets when it names none."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ToolkitError

# Store names are also peft adapter names, which become module keys: those cannot hold a '.'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
NAME_RULE = "use up to 64 letters, digits, '_' or '-', starting with a letter or digit"


def is_valid_name(name) -> bool:
    return isinstance(name, str) and bool(NAME_PATTERN.match(name))


def check_name(name) -> None:
    if not is_valid_name(name):
        raise ToolkitError(f"adapter name {name!r} is not valid; {NAME_RULE}")


def slug(text: str) -> str:
    """A valid name made of `text`, or "" when nothing of it is usable."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-_").lower()[:64]


def default_adapter_name(dataset: str, config: str, train_files: list[str]) -> str:
    """A store name derived from the data: 'wikitext-103-raw-v1' for Salesforce/wikitext, 'notes' for notes/*.txt."""
    if dataset:
        source = config or dataset.rstrip("/").split("/")[-1].split(":")[-1]
    elif train_files:
        source = Path(train_files[0]).stem.replace("*", "") or Path(train_files[0]).parent.name
    else:
        source = "adapter"
    return slug(source) or "adapter"
