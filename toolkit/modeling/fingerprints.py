"""Fingerprints that identify a base model's weights, a tokenizer and a file, by content.

peft loads an adapter onto a different base of the same shapes without a word; the store records these
fingerprints with every adapter so that loading can refuse that.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path

from ..errors import ToolkitError
from ..files import cache_root, write_json
from ..records import ModelSource

# Buffers and tied weights that do not identify a base: the causal mask, and the head tied to wte.
_NOT_WEIGHTS = (".attn.bias", ".attn.masked_bias", "lm_head.weight")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalisation, special tokens)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


def weight_files(source: ModelSource) -> list[Path]:
    """The safetensors files of a model source, from its folder or the Hub cache."""
    folder = Path(source.path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                source.path,
                revision=source.revision,
                allow_patterns=["*.safetensors", "*.json"],
                local_files_only=source.local_files_only,
            )
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ToolkitError(
            f"{source.path}: has no .safetensors weights; only safetensors are loaded (no pickle): "
            "save the model again with save_pretrained, which writes safetensors"
        )
    return files


def weights_fingerprint(source: ModelSource) -> str:
    """sha256 over the base's tensors (names without the 'transformer.' prefix, dtypes, shapes, bytes).

    Content, not file bytes: the same weights re-saved elsewhere match, another base of the same shapes
    does not. Results are cached by file path, size and modification time, so a base is hashed once.
    """
    files = weight_files(source)
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    cache_file = cache_root() / "fingerprints.json"
    known = _read_cache(cache_file)
    if key not in known:
        known = _remember(cache_file, key, _hash_tensors(files))
    return known[key]


def _hash_tensors(files: list[Path]) -> str:
    import torch
    from safetensors import safe_open

    per_tensor = {}  # short name -> "dtype|shape|sha256 of bytes"; combined in name order across shards
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not iterable
                short = name.removeprefix("transformer.")
                if short.endswith(_NOT_WEIGHTS):
                    continue
                tensor = f.get_tensor(name).contiguous()
                raw = tensor.view(-1).view(torch.uint8).numpy()
                per_tensor[short] = f"{tensor.dtype}|{tuple(tensor.shape)}|{hashlib.sha256(raw).hexdigest()}"
    digest = hashlib.sha256()
    for short in sorted(per_tensor):
        digest.update(f"{short}|{per_tensor[short]}\n".encode())
    return digest.hexdigest()


def _read_cache(cache_file: Path) -> dict:
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _remember(cache_file: Path, key: str, fingerprint: str) -> dict:
    """Add one entry to the fingerprint cache without losing another process's: under a lock, read what is
    there now, merge, and replace the file in one step. A cache that cannot be written is only skipped."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with open(cache_file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = _read_cache(cache_file) | {key: fingerprint}
            write_json(cache_file, known)
    except OSError:
        known = {key: fingerprint}
    return known


def tensor_shapes(safetensors_file: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(safetensors_file), framework="pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118 - safe_open is not iterable
