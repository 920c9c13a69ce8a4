"""Where the toolkit keeps derived files, the one way it writes a folder (complete or not at all), and
how it reads the small JSON records it writes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path


def cache_root() -> Path:
    """`$GPT2_ADAPT_CACHE`, else `$XDG_CACHE_HOME/gpt2-adapt`, else `~/.cache/gpt2-adapt`."""
    if os.environ.get("GPT2_ADAPT_CACHE"):
        return Path(os.environ["GPT2_ADAPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt2-adapt"


@contextlib.contextmanager
def atomic_folder(final: Path, replace: bool = False):
    """Yield a temporary folder beside `final`; on success it becomes `final` in one rename.

    Files are fsynced before the rename, so a crash or a full disk leaves either the previous folder or
    the new one, never a mix. With `replace=False` an existing `final` wins (another process built the
    same cache entry first) and ours is discarded.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if final.exists():
            if not replace:
                shutil.rmtree(tmp)
                return
            old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            _fsync_path(path)
    _fsync_path(folder)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict:
    """A JSON record, or {} when it is absent or unreadable (the callers treat both as 'not recorded')."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
