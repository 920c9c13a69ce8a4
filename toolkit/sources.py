"""Where models and datasets come from: a builtin, a local folder, or the Hugging Face Hub.

The Hub is probed once with a short timeout: when it cannot be reached, a name that is not in the local
cache fails in seconds with a message naming the fix, instead of after the libraries' 20-60 s of retries.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from . import builtin
from .errors import ToolkitError

PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def model_source(name: str, revision: str = "main", key: str = "model.name") -> dict:
    """`from_pretrained` arguments for a model name: {"pretrained_model_name_or_path": ..., ...}.
    `key` is what error messages call the name: a recipe key or a command's option."""
    if builtin.is_builtin(name):
        if name != builtin.TINY_GPT2:
            raise ToolkitError(f"{key}: unknown builtin {name!r}; use {builtin.TINY_GPT2}, the only one")
        return {"pretrained_model_name_or_path": str(builtin.tiny_gpt2())}
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ToolkitError(
                f"{key}: {name} has no config.json; point it at a folder written by save_pretrained"
            )
        return {"pretrained_model_name_or_path": str(folder)}
    if looks_like_path(name):
        raise ToolkitError(f"{key}: no such folder {name}; check the path or give a hub id such as gpt2")
    if hub_reachable():
        return {"pretrained_model_name_or_path": name, "revision": revision}
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return {"pretrained_model_name_or_path": name, "revision": revision, "local_files_only": True}
    raise ToolkitError(
        f"{key}: {name!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
        f"download it on a connected machine (save_pretrained) and set {key} to that folder"
    )


def dataset_cached(name: str) -> bool:
    import datasets

    return (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir()
