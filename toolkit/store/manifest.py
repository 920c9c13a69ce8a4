"""The manifest beside every adapter: what it was trained on (base, tokenizer, data, recipe), and every file's
sha256 and every tensor's shape, so that loading can refuse an adapter that is not what was trained.

peft loads an adapter with a missing tensor after only a warning, and onto a different base of the same
shapes without a word; the manifest lets the store refuse both.

This module is the only one that reads a manifest's keys (tests/test_architecture.py checks it): the rest
reads the `Manifest` record. A manifest a person edited or damaged is a `RecordError` naming the field.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..files import read_json
from ..modeling.fingerprints import file_sha256, tensor_shapes
from ..records import RecordError, RunIdentity

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
WEIGHTS = "adapter_model.safetensors"  # peft's name for an adapter's weights, in a folder and a checkpoint
_REQUIRED = object()


def _shown(value) -> str:
    text = str(value)
    return repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text)} characters)"


def _damaged(path: str, value, expected: str) -> RecordError:
    return RecordError(f"{MANIFEST} is damaged: {path} is {_shown(value)}, not {expected}")


def _field(data: dict, key: str, where: str, kinds: tuple, expected: str, default=_REQUIRED):
    """`data[key]`, checked to be one of `kinds` (a bool is not an int); `default` when absent, if given."""
    path = f"{where}.{key}" if where else key
    if key not in data:
        if default is _REQUIRED:
            raise RecordError(f"{MANIFEST} is damaged: it has no {path}")
        return default
    value = data[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise _damaged(path, value, expected)
    return value


def _object(data: dict, key: str, where: str = "", default=_REQUIRED) -> dict:
    return _field(data, key, where, (dict,), "an object", default)


def _text(data: dict, key: str, where: str, default=_REQUIRED, optional: bool = False) -> str | None:
    kinds = (str, type(None)) if optional else (str,)
    return _field(data, key, where, kinds, "text", default)


def _texts(data: dict, key: str, where: str) -> tuple[str, ...]:
    values = _field(data, key, where, (list,), "a list of text", ())
    if not all(isinstance(v, str) for v in values):
        raise _damaged(f"{where}.{key}", values, "a list of text")
    return tuple(values)


@dataclass(frozen=True)
class BaseRecord:
    """A base model as an adapter records it: its name and hub revision, and the fingerprints of its weights
    and tokenizer (None where not known: an adapter without a manifest, a base named by the user)."""

    name: str  # a hub id or builtin as given, a folder as an absolute path
    revision: str = "main"  # hub branch, tag or commit (unused for a folder)
    weights_sha256: str | None = None
    tokenizer_sha256: str | None = None

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "revision": self.revision,
            "weights_sha256": self.weights_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
        }

    @classmethod
    def from_json(cls, data: dict) -> BaseRecord:
        name = _text(data, "name", "base")
        if not name:
            raise _damaged("base.name", name, "a model name")
        return cls(
            name=name,
            revision=_text(data, "revision", "base", None, optional=True) or "main",
            weights_sha256=_text(data, "weights_sha256", "base", None, optional=True),
            tokenizer_sha256=_text(data, "tokenizer_sha256", "base", None, optional=True),
        )


@dataclass(frozen=True)
class DataRecord:
    """What an adapter was trained on: a dataset (hub id or builtin), local files, or, for one imported, the
    folder it came from. Each kind writes its own keys."""

    dataset: str | None = None  # hub id or builtin, as the recipe gives it
    config: str | None = None
    train_split: str | None = None
    eval_split: str | None = None
    train_files: tuple[str, ...] = ()  # absolute paths
    eval_files: tuple[str, ...] = ()
    text_column: str | None = None
    fingerprint: str | None = None  # of the packed data (sha256)
    imported_from: str | None = None  # the folder an imported adapter was copied from

    @property
    def label(self) -> str:
        """How a listing names it: "wikitext (wikitext-2-raw-v1)", "a.txt, b.txt", or the import's folder."""
        text = self.dataset or ", ".join(self.train_files) or self.imported_from or ""
        return text + (f" ({self.config})" if self.config else "")

    def to_json(self) -> dict:
        if self.imported_from is not None:
            return {"imported_from": self.imported_from}
        if self.train_files:
            return {
                "train_files": list(self.train_files),
                "eval_files": list(self.eval_files),
                "text_column": self.text_column,
                "fingerprint": self.fingerprint,
            }
        return {
            "dataset": self.dataset,
            "config": self.config,
            "train_split": self.train_split,
            "eval_split": self.eval_split,
            "text_column": self.text_column,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, data: dict) -> DataRecord:
        texts = ("dataset", "config", "train_split", "eval_split", "text_column", "fingerprint", "imported_from")
        return cls(
            **{key: _text(data, key, "dataset", None, optional=True) for key in texts},
            train_files=_texts(data, "train_files", "dataset"),
            eval_files=_texts(data, "eval_files", "dataset"),
        )


@dataclass(frozen=True)
class TrainedWith:
    """How an adapter was trained, beside what on."""

    quantization: str = "none"  # of the base's weights: "none", "int8", "nf4" or "fp4"
    use_dora: bool = False
    use_rslora: bool = False
    format: str = "text"  # of the data: "text" or prompt/completion examples
    template: str | None = None  # the prompt template of prompt/completion data; None for text

    def to_json(self) -> dict:
        out = {"quantization": self.quantization, "use_dora": self.use_dora, "use_rslora": self.use_rslora}
        return {**out, "format": self.format, **({"template": self.template} if self.template is not None else {})}

    @classmethod
    def from_json(cls, data: dict) -> TrainedWith:
        where = "trained_with"
        return cls(
            quantization=_text(data, "quantization", where, "none"),
            use_dora=_field(data, "use_dora", where, (bool,), "true or false", False),
            use_rslora=_field(data, "use_rslora", where, (bool,), "true or false", False),
            format=_text(data, "format", where, "text"),
            template=_text(data, "template", where, None, optional=True),
        )


@dataclass(frozen=True)
class FileRecord:
    sha256: str
    bytes: int

    def to_json(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_json(cls, data: dict, where: str) -> FileRecord:
        return cls(_text(data, "sha256", where), _field(data, "bytes", where, (int,), "a whole number"))


_MANIFEST_KEYS = {
    *("format", "name", "created", "base", "dataset", "recipe_sha256", "trained_with", "versions", "files", "tensors")
}


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds beside each adapter."""

    name: str  # the adapter's name: a folder copied under another name is refused
    created: str  # when it was written, ISO 8601 in UTC
    base: BaseRecord
    dataset: DataRecord
    recipe_sha256: str | None  # of the resolved recipe; None for an imported adapter
    files: dict[str, FileRecord]  # every file of the folder but the manifest
    tensors: dict[str, list[int]]  # every tensor of the weights, with its shape
    versions: dict[str, str] = field(default_factory=dict)  # of the toolkit and the libraries that trained it
    trained_with: TrainedWith | None = None  # None: imported, or written before it was recorded
    format: int = MANIFEST_FORMAT
    later_keys: dict = field(default_factory=dict)  # keys a later version wrote: kept, and written back

    @property
    def timestamp(self) -> int:
        """`created` in seconds since the epoch."""
        return int(datetime.datetime.fromisoformat(self.created).timestamp())

    @property
    def identity(self) -> RunIdentity | None:
        """The identity of the run that trained the adapter (None for an imported one, which records none)."""
        if not self.recipe_sha256:
            return None
        return RunIdentity(self.recipe_sha256, self.dataset.fingerprint or "", self.base.weights_sha256 or "")

    @classmethod
    def build(cls, folder: Path, *, name: str, base: BaseRecord, dataset: DataRecord, **fields) -> Manifest:
        """The manifest of a finished adapter folder: what it was trained on, and every file's sha256.
        `fields`: recipe_sha256, versions and trained_with."""
        files = {
            p.name: FileRecord(file_sha256(p), p.stat().st_size)
            for p in sorted(folder.iterdir())
            if p.is_file() and p.name != MANIFEST
        }
        created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        return cls(name, created, base, dataset, files=files, tensors=tensor_shapes(folder / WEIGHTS), **fields)

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "name": self.name,
            "created": self.created,
            "base": self.base.to_json(),
            "dataset": self.dataset.to_json(),
            "recipe_sha256": self.recipe_sha256,
            **({"trained_with": self.trained_with.to_json()} if self.trained_with is not None else {}),
            "versions": dict(self.versions),
            "files": {name: record.to_json() for name, record in self.files.items()},
            "tensors": {name: list(shape) for name, shape in self.tensors.items()},
            **self.later_keys,
        }

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        created = _field(data, "created", "", (str,), "a date and time (ISO 8601)")
        try:
            datetime.datetime.fromisoformat(created)
        except ValueError:
            raise _damaged("created", created, "a date and time (ISO 8601)") from None
        files = _object(data, "files")
        tensors = _object(data, "tensors")
        for name, shape in tensors.items():
            if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
                raise _damaged(f"tensors.{name}", shape, "a shape (a list of whole numbers)")
        trained_with = _object(data, "trained_with", default=None)
        return cls(
            name=_text(data, "name", ""),
            created=created,
            base=BaseRecord.from_json(_object(data, "base")),
            dataset=DataRecord.from_json(_object(data, "dataset")),
            recipe_sha256=_text(data, "recipe_sha256", "", None, optional=True),
            files={name: FileRecord.from_json(_object(files, name, "files"), f"files.{name}") for name in files},
            tensors={name: list(shape) for name, shape in tensors.items()},
            versions=_object(data, "versions", default={}),
            trained_with=TrainedWith.from_json(trained_with) if trained_with is not None else None,
            format=_field(data, "format", "", (int,), "a whole number", MANIFEST_FORMAT),
            later_keys={key: value for key, value in data.items() if key not in _MANIFEST_KEYS},
        )

    def problems(self, folder: Path) -> list[str]:
        """What differs between the adapter folder and this manifest: files missing, extra, truncated or
        changed, tensors missing or extra or reshaped."""
        problems = []
        present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
        listed = self.files
        for missing in sorted(set(listed) - present):
            problems.append(f"file {missing} is missing")
        for extra in sorted(present - set(listed)):
            problems.append(f"file {extra} is not in the manifest")
        for file_name in sorted(set(listed) & present):
            path, record = folder / file_name, listed[file_name]
            size = path.stat().st_size
            if size != record.bytes:
                problems.append(
                    f"file {file_name} has {size} bytes, {record.bytes} were written (truncated or changed)"
                )
            elif file_sha256(path) != record.sha256:
                problems.append(f"file {file_name} was modified since it was written (sha256 differs)")
        weights = folder / WEIGHTS
        if weights.is_file():
            try:
                shapes = tensor_shapes(weights)
            except Exception as err:  # noqa: BLE001 - a damaged header: safetensors raises its own error types
                return problems or [f"{WEIGHTS} cannot be read: {err}"]
            expected = self.tensors
            for missing in sorted(set(expected) - set(shapes)):
                problems.append(f"tensor {missing} is missing")
            for extra in sorted(set(shapes) - set(expected)):
                problems.append(f"tensor {extra} is not in the manifest")
            for name in sorted(set(shapes) & set(expected)):
                if list(shapes[name]) != list(expected[name]):
                    problems.append(f"tensor {name} has shape {shapes[name]}, expected {expected[name]}")
        return problems


def write_manifest(folder: Path, **fields) -> Manifest:
    """Write the manifest of a finished adapter folder (see `Manifest.build` for the fields)."""
    manifest = Manifest.build(folder, **fields)
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2), encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of an adapter folder: None when it has none (or one that is not a JSON object, which
    `files.json_problem` reports); RecordError when its fields are not what the toolkit writes."""
    data = read_json(folder / MANIFEST)
    return Manifest.from_json(data) if data else None


def manifest_name(folder: Path):
    """The adapter name a folder's manifest records (None: none), read even when the rest is damaged, so
    that a folder copied under another name is refused whatever its state."""
    return read_json(folder / MANIFEST).get("name")


def run_identity(folder: Path) -> RunIdentity | None:
    """The identity of the run that trained the adapter in `folder` (None: imported, no manifest, or a
    damaged one, which no run wrote)."""
    try:
        manifest = read_manifest(folder)
    except RecordError:
        return None
    return manifest.identity if manifest else None
