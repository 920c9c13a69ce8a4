"""Where a model comes from: a builtin, a local folder (save_pretrained output) or a hub id."""

from __future__ import annotations

from pathlib import Path

from ..errors import ToolkitError
from ..records import ModelSource
from . import builtin, pretraining
from .hub import hub_reachable, looks_like_path


def model_source(name: str, revision: str = "main", key: str = "model.name") -> ModelSource:
    """The source of a model name. `key` is what error messages call the name: a recipe key or a parameter."""
    if builtin.is_builtin(name):
        if name != builtin.TINY_GPT2:
            raise ToolkitError(f"{key}: unknown builtin {name!r}; use {builtin.TINY_GPT2}, the only one")
        return ModelSource(str(pretraining.tiny_gpt2()))
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ToolkitError(f"{key}: {name} has no config.json; point it at a folder written by save_pretrained")
        return ModelSource(str(folder))
    if looks_like_path(name):
        raise ToolkitError(f"{key}: no such folder {name}; check the path or give a hub id such as gpt2")
    if hub_reachable():
        return ModelSource(name, revision)
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return ModelSource(name, revision, local_files_only=True)
    raise ToolkitError(
        f"{key}: {name!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
        f"download it on a connected machine (save_pretrained) and set {key} to that folder"
    )


def recorded_name(name: str) -> str:
    """How a model name is recorded with an adapter: a local folder as an absolute path (so that the adapter
    loads from anywhere), a hub id or builtin as given."""
    folder = Path(name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else name
