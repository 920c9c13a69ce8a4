"""Where the toolkit keeps derived files, and the one way it writes anything: complete or not at all.

A folder is built beside its final place and renamed into it; a file is written under a unique temporary
name and replaced in one step. Both are synced first, so a crash, a kill or a full disk leaves the old
version or the new one, never a mix, and two processes writing at once never share a temporary name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path

from .errors import ToolkitError

CACHE_ENV = "GPT2_ADAPT_CACHE"


def cache_root() -> Path:
    """`$GPT2_ADAPT_CACHE`, else `$XDG_CACHE_HOME/gpt2-adapt`, else `~/.cache/gpt2-adapt`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gpt2-adapt"


def writable_cache() -> Path:
    """The cache root, created if needed; a root that cannot be written is refused with the fix."""
    root = cache_root()
    where = f"${CACHE_ENV}" if os.environ.get(CACHE_ENV) else "the cache folder"
    if root.exists() and not root.is_dir():
        raise ToolkitError(f"{where} ({root}) is a file, not a folder; point {CACHE_ENV} at a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ToolkitError(
            f"{where} ({root}) cannot be written ({err.strerror or err}); point {CACHE_ENV} at a folder you can write"
        ) from None
    return root


@contextlib.contextmanager
def atomic_folder(final: Path, replace: bool = False):
    """Yield a temporary folder beside `final`; on success it becomes `final` in one rename.

    With `replace=False` an existing `final` wins (another process built the same cache entry first) and
    ours is discarded; with `replace=True` the old folder stays in place until the new one is complete.
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
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Replace the file `path` with `text` in one step (a unique temporary name, synced, then renamed)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, record) -> None:
    write_atomic(path, json.dumps(record, indent=2))


def read_json(path: Path) -> dict:
    """A JSON object, or {} when the file is absent, unreadable or not an object (callers treat all three as
    'not recorded'; where that matters they say which, see `json_problem`)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def json_problem(path: Path) -> str | None:
    """What is wrong with a JSON record file that exists: not UTF-8, not JSON, or not an object."""
    try:
        value = json.loads(Path(path).read_bytes().decode("utf-8"))
    except OSError as err:
        return f"{Path(path).name} cannot be read ({err.strerror or err})"
    except UnicodeDecodeError:
        return f"{Path(path).name} is not UTF-8 text"
    except ValueError as err:
        return f"{Path(path).name} is not JSON ({err})"
    return None if isinstance(value, dict) else f"{Path(path).name} is not a JSON object"


def fsync_tree(folder: Path) -> None:
    for path in Path(folder).rglob("*"):
        if path.is_file():
            fsync_path(path)
    fsync_path(folder)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
