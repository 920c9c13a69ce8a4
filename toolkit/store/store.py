"""The adapter store: one folder per adapter under a root, written atomically, read with its records.

The root is the `store` argument, else `$GPT2_ADAPT_STORE`, else `./adapters`. An adapter folder is complete
or absent: it is built in a temporary folder beside it and renamed into place. Training checkpoints live in
`<root>/.checkpoints/<name>/`, and per-name locks in `<root>/.locks/`, outside the adapter folders.

An adapter is a real folder whose manifest names it: a symbolic link (to a folder outside the store, say)
or a folder copied under another name is refused, so that no command reads or deletes through it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tomllib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config.names import NAME_PATTERN, check_name
from ..config.recipe import DataSpec, Recipe, parse_recipe
from ..errors import ToolkitError, param
from ..files import atomic_folder, json_problem, read_json
from ..records import RecordError, TrainingMetrics
from .manifest import MANIFEST, BaseRecord, Manifest, manifest_name, read_manifest

STORE_ENV = "GPT2_ADAPT_STORE"
DEFAULT_ROOT = "adapters"
RECORDS = (MANIFEST, "metrics.json", "adapter_config.json")  # the JSON records an adapter folder holds


@dataclass(frozen=True)
class AdapterInfo:
    """Everything the store knows of an adapter, and what is wrong with its records (if anything)."""

    name: str
    path: str
    manifest: Manifest | None  # None: none, or a damaged one (its problem is in `problems`)
    metrics: dict
    adapter_config: dict
    recipe: str | None  # the resolved recipe's TOML, None when absent (imported adapters)
    files: dict[str, int]  # file name -> bytes
    problems: list[str] = field(default_factory=list)  # damaged records; empty for a sound adapter

    @property
    def bytes(self) -> int:
        return sum(self.files.values())

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "path": self.path,
            "manifest": self.manifest.to_json() if self.manifest else {},
            "metrics": self.metrics,
            "adapter_config": self.adapter_config,
            "recipe": self.recipe,
            "files": self.files,
            "bytes": self.bytes,
            "problems": self.problems,
        }

    def summary(self) -> dict:
        """One row of `adapters list`: what a person scans the store for."""
        manifest = self.manifest
        trained_with = manifest.trained_with if manifest else None
        targets = self.adapter_config.get("target_modules") or []
        figures = self.metrics if not self.problems else {}
        variant = [v for v, key in (("DoRA", "use_dora"), ("rsLoRA", "use_rslora")) if self.adapter_config.get(key)]
        return {
            "name": self.name,
            "base": manifest.base.name if manifest else self.adapter_config.get("base_model_name_or_path"),
            "dataset": manifest.dataset.label if manifest else "",
            "rank": self.adapter_config.get("r"),
            "variant": "+".join(variant) or "LoRA",
            "quantization": trained_with.quantization if trained_with else None,  # of its base; None: imported
            "format": trained_with.format if trained_with else None,
            "targets": sorted(targets) if isinstance(targets, list) else targets,
            "bytes": self.bytes,
            "base_perplexity": figures.get("base", {}).get("perplexity"),
            "adapted_perplexity": figures.get("adapted", {}).get("perplexity"),
            "created": manifest.created if manifest else None,
            "problems": self.problems,
        }


class AdapterStore:
    def __init__(self, root: str | Path | None = None):
        if root:
            self.root, self.setting = Path(root), param("store")
        elif os.environ.get(STORE_ENV):
            self.root, self.setting = Path(os.environ[STORE_ENV]), STORE_ENV
        else:
            self.root, self.setting = Path(DEFAULT_ROOT), param("store")

    def path(self, name: str) -> Path:
        check_name(name)
        return self.root / name

    def exists(self, name: str) -> bool:
        """Whether `name` holds an adapter (a symbolic link counts: it is refused by name, not ignored)."""
        return (self.path(name) / "adapter_config.json").is_file()

    def checkpoints(self, name: str) -> Path:
        check_name(name)
        return self.root / ".checkpoints" / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if NAME_PATTERN.match(p.name) and self.exists(p.name))

    def require(self, name: str) -> Path:
        """The folder of an existing adapter, or an error that says what the store holds or why the folder is
        not one the store can use."""
        if not self.exists(name):
            known = ", ".join(self.names()) or "none"
            raise ToolkitError(
                f"no adapter named {name!r} in {self.root} (it has: {known}); "
                f"run `gpt2-adapt adapters list` to see them, or point {self.setting} at another store"
            )
        refusal = self.refusal(name)
        if refusal:
            raise ToolkitError(refusal)
        return self.path(name)

    def refusal(self, name: str) -> str | None:
        """Why the folder of `name` is not an adapter of this store, though it looks like one."""
        folder = self.path(name)
        if folder.is_symlink():
            return (
                f"adapter {name!r}: {folder} is a symbolic link (to {os.readlink(folder)}), not a folder of the "
                "store; remove the link, and bring the adapter in with `gpt2-adapt adapters import`"
            )
        inner = next((p for p in sorted(folder.rglob("*")) if p.is_symlink()), None)
        if inner is not None:  # its checksum would be of a file outside the store, which can change under it
            return (
                f"adapter {name!r}: {inner} is a symbolic link (to {os.readlink(inner)}), not a file of the "
                "store; remove the link, and bring the adapter in with `gpt2-adapt adapters import`"
            )
        recorded = manifest_name(folder)
        if recorded is not None and recorded != name:
            return (
                f"adapter {name!r}: its manifest names adapter {recorded!r} (copied or renamed by hand); "
                "bring it in under a new name with `gpt2-adapt adapters import`"
            )
        return None

    def info(self, name: str) -> AdapterInfo:
        """Everything the store knows of an adapter. Damaged records are reported in `problems`, not raised,
        so that a listing shows the others."""
        folder = self.require(name)
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
        problems = [p for record in RECORDS if record in files and (p := json_problem(folder / record))]
        metrics = read_json(folder / "metrics.json")
        if "metrics.json" in files and metrics:
            try:
                TrainingMetrics.from_json(metrics)
            except RecordError as err:
                problems.append(str(err))
        manifest = None
        if MANIFEST in files:
            try:
                manifest = read_manifest(folder)
            except RecordError as err:
                problems.append(str(err))
        recipe = None
        if "recipe.toml" in files:
            try:
                recipe = (folder / "recipe.toml").read_bytes().decode("utf-8")
                tomllib.loads(recipe)
            except UnicodeDecodeError:
                problems.append("recipe.toml is not UTF-8 text")
            except tomllib.TOMLDecodeError as err:
                problems.append(f"recipe.toml is not valid TOML ({err})")
        return AdapterInfo(
            name=name,
            path=str(folder),
            manifest=manifest,
            metrics=metrics,
            adapter_config=read_json(folder / "adapter_config.json"),
            recipe=recipe,
            files=files,
            problems=problems,
        )

    def recorded_base(self, name: str, manifest_only: bool = False) -> BaseRecord | None:
        """The base an adapter records: its manifest's or, without a readable one (written elsewhere, or
        damaged), the one peft's adapter_config names (not with `manifest_only`: for what only a verified
        adapter may decide); None when nothing names one."""
        folder = self.require(name)
        try:
            manifest = read_manifest(folder)
        except RecordError:
            manifest = None
        if manifest is not None:
            return manifest.base
        if manifest_only:
            return None
        config = read_json(folder / "adapter_config.json")
        named, revision = config.get("base_model_name_or_path"), config.get("revision")
        if not isinstance(named, str) or not named:
            return None
        return BaseRecord(named, revision if isinstance(revision, str) and revision else "main")

    def base_for(self, names: Sequence[str], base: str | None = None, manifest_only: bool = False) -> BaseRecord | None:
        """The base to run adapters `names` on: `base` when given, else the one most of them record (a tie
        goes to the first named); at the revision they record for it, else main. None when none records one.
        `manifest_only`: count only the adapters whose manifest records a base (see recorded_base)."""
        recorded = [record for name in names if (record := self.recorded_base(name, manifest_only)) is not None]
        if base:
            revisions = Counter(record.revision for record in recorded if record.name == base)
            return BaseRecord(base, revisions.most_common(1)[0][0] if revisions else "main")
        counts = Counter((record.name, record.revision) for record in recorded)
        if not counts:
            return None
        chosen = counts.most_common(1)[0][0]
        return next(record for record in recorded if (record.name, record.revision) == chosen)

    def prompt_format(self, name: str) -> DataSpec | None:
        """How a prompt/completion adapter reads examples and is prompted: its recipe's data section (columns,
        template, truncation). None for an adapter trained on text, or imported (it has no recipe). A damaged
        recipe raises ToolkitError."""
        recipe = self.trained_recipe(name)
        return recipe.data if recipe is not None and recipe.data.examples else None

    def trained_recipe(self, name: str) -> Recipe | None:
        """The resolved recipe an adapter was trained from (its data format, template, quantization, ...), or
        None for one imported from elsewhere, which has none."""
        path = self.require(name) / "recipe.toml"
        if not path.is_file():
            return None
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            text = "\0"  # not TOML either: parse_recipe says so
        return parse_recipe(text, f"adapter {name!r}: recipe.toml")

    def remove(self, name: str) -> None:
        """Delete an adapter and its checkpoints, unless a run holds the name. The folder is renamed away
        first, so it vanishes at once."""
        folder = self.require(name)
        self.check_writable()
        with self.lock(name, fix="wait for that run to end (or stop it) before removing the adapter"):
            trash = self.root / f".removing-{name}-{uuid.uuid4().hex[:8]}"
            self._write(lambda: os.rename(folder, trash))
            shutil.rmtree(trash, ignore_errors=True)
            shutil.rmtree(self.checkpoints(name), ignore_errors=True)

    def saving(self, name: str):
        """A context manager yielding a temporary folder that becomes the adapter `name` when it closes
        without error; an adapter already there stays until then."""
        if self.path(name).is_symlink():
            raise ToolkitError(self.refusal(name))
        return atomic_folder(self.path(name), replace=True)

    def check_writable(self) -> None:
        """Refuse, before anything is written, a store that is a file, sits under a file, or cannot be written."""
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ToolkitError(
                f"the store {self.root} cannot be created: {existing} is a file; point {self.setting} at a folder"
            )
        if not os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only filesystem, even for root
            raise ToolkitError(
                f"the store {self.root} cannot be written ({existing} is read-only); "
                f"point {self.setting} at a folder you can write, or change its permissions"
            )

    def _write(self, action):
        """Run a write into the store; a store that refuses it (permissions, a read-only filesystem) is one
        line naming the store and the fix, not a traceback."""
        try:
            return action()
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise ToolkitError(
                f"the store {self.root} cannot be written ({err.strerror}: {err.filename}); "
                f"point {self.setting} at a folder you can write, or change its permissions"
            ) from None

    def check_unlocked(self, name: str) -> None:
        """Fail at once when another process holds `name`'s lock; creates nothing."""
        lock_file = self._lock_file(name)
        if not lock_file.exists():
            return
        try:
            f = open(lock_file)  # noqa: SIM115 - closed by the `with` below, once open is known to work
        except OSError:
            return  # unreadable: the run that takes the lock will say so
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ToolkitError(_busy(name, lock_file, TRAIN_FIX)) from None

    @contextlib.contextmanager
    def lock(self, name: str, fix: str | None = None):
        """Hold `name` for one process: training and saving it, or removing it. The kernel frees the lock if
        the process dies."""
        lock_file = self._lock_file(name)
        self._write(lambda: lock_file.parent.mkdir(parents=True, exist_ok=True))
        with self._write(lambda: open(lock_file, "a+")) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ToolkitError(_busy(name, lock_file, fix or TRAIN_FIX)) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield

    def _lock_file(self, name: str) -> Path:
        check_name(name)
        return self.root / ".locks" / f"{name}.lock"


TRAIN_FIX = "wait for it to finish, or set output.name to another name"


def _busy(name: str, lock_file: Path, fix: str) -> str:
    try:
        holder = lock_file.read_text().strip() or "?"
    except OSError:
        holder = "?"
    return f"adapter {name!r} is being trained or saved by another process (pid {holder}); {fix}"
