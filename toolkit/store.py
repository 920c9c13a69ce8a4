"""The adapter store: one folder per adapter under a root, written atomically.

The root is `--store DIR`, else `$GPT2_ADAPT_STORE`, else `./adapters`. An adapter folder is complete or
absent: it is built in a temporary folder beside it and renamed into place. Training checkpoints live
in `<root>/.checkpoints/<name>/`, outside the adapter folders.
"""

from __future__ import annotations

import os
from pathlib import Path

from .cache import atomic_folder
from .errors import ToolkitError
from .recipe import NAME_PATTERN

STORE_ENV = "GPT2_ADAPT_STORE"
DEFAULT_ROOT = "adapters"


class AdapterStore:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root or os.environ.get(STORE_ENV) or DEFAULT_ROOT)

    def path(self, name: str) -> Path:
        check_name(name)
        return self.root / name

    def exists(self, name: str) -> bool:
        return (self.path(name) / "adapter_config.json").is_file()

    def checkpoints(self, name: str) -> Path:
        check_name(name)
        return self.root / ".checkpoints" / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and self.exists(p.name))

    def saving(self, name: str):
        """A context manager yielding a temporary folder that becomes the adapter `name` when it closes
        without error; an adapter already there stays until then."""
        return atomic_folder(self.path(name), replace=True)


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name or ""):
        raise ToolkitError(
            f"adapter name {name!r} is not valid; use up to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
