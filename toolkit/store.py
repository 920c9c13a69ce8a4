"""The adapter store: one folder per adapter under a root, written atomically, read with its records.

The root is `--store DIR`, else `$GPT2_ADAPT_STORE`, else `./adapters`. An adapter folder is complete or
absent: it is built in a temporary folder beside it and renamed into place. Training checkpoints live
in `<root>/.checkpoints/<name>/`, and per-name locks in `<root>/.locks/`, outside the adapter folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from .cache import atomic_folder, read_json
from .errors import ToolkitError
from .provenance import MANIFEST
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
        return sorted(p.name for p in self.root.iterdir() if NAME_PATTERN.match(p.name) and self.exists(p.name))

    def require(self, name: str) -> Path:
        """The folder of an existing adapter, or an error that says what the store holds."""
        if not self.exists(name):
            known = ", ".join(self.names()) or "none"
            raise ToolkitError(
                f"no adapter named {name!r} in {self.root} (it has: {known}); "
                "run `gpt2-adapt adapters list` to see them, or pass --store to use another store"
            )
        return self.path(name)

    def info(self, name: str) -> dict:
        """Everything the store knows of an adapter: manifest, metrics, recipe, files and size."""
        folder = self.require(name)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        return {
            "name": name,
            "path": str(folder),
            "manifest": read_json(folder / MANIFEST),
            "metrics": read_json(folder / "metrics.json"),
            "adapter_config": read_json(folder / "adapter_config.json"),
            "recipe": (folder / "recipe.toml").read_text() if (folder / "recipe.toml").is_file() else None,
            "files": {p.name: p.stat().st_size for p in files},
            "bytes": sum(p.stat().st_size for p in files),
        }

    def remove(self, name: str) -> None:
        """Delete an adapter and its checkpoints; the folder is renamed away first, so it vanishes at once."""
        folder = self.require(name)
        trash = self.root / f".removing-{name}-{os.getpid()}"
        os.rename(folder, trash)
        shutil.rmtree(trash)
        shutil.rmtree(self.checkpoints(name), ignore_errors=True)

    def saving(self, name: str):
        """A context manager yielding a temporary folder that becomes the adapter `name` when it closes
        without error; an adapter already there stays until then."""
        return atomic_folder(self.path(name), replace=True)

    def check_unlocked(self, name: str) -> None:
        """Fail at once when another process holds `name`'s lock; creates nothing."""
        lock_file = self.root / ".locks" / f"{name}.lock"
        if not lock_file.exists():
            return
        with open(lock_file) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ToolkitError(_busy(name, lock_file)) from None

    @contextlib.contextmanager
    def lock(self, name: str):
        """Hold `name` for one process: training and saving it. The kernel frees the lock if we die."""
        check_name(name)
        lock_file = self.root / ".locks" / f"{name}.lock"
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ToolkitError(_busy(name, lock_file)) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield


def _busy(name: str, lock_file: Path) -> str:
    holder = lock_file.read_text().strip() if lock_file.is_file() else "?"
    return (
        f"adapter {name!r} is being trained or saved by another process (pid {holder}); "
        "wait for it to finish, or set output.name to another name"
    )


def check_name(name: str) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ToolkitError(
            f"adapter name {name!r} is not valid; use up to 64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )

