"""Provenance: fingerprints of a base model and a tokenizer, and the manifest that binds an adapter to them.

peft loads an adapter with a missing tensor after only a warning, and onto a different base of the same
shapes without a word; the manifest written beside every adapter lets loading refuse both.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

from .cache import cache_root
from .errors import ToolkitError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
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


def weight_files(source: dict) -> list[Path]:
    """The safetensors files of a model source (see sources.model_source), from the folder or Hub cache."""
    name = source["pretrained_model_name_or_path"]
    folder = Path(name)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(
            snapshot_download(
                name,
                revision=source.get("revision"),
                allow_patterns=["*.safetensors", "*.json"],
                local_files_only=source.get("local_files_only", False),
            )
        )
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ToolkitError(
            f"{name}: has no .safetensors weights; only safetensors are loaded (no pickle): "
            "save the model again with save_pretrained, which writes safetensors"
        )
    return files


def weights_fingerprint(source: dict) -> str:
    """sha256 over the base's tensors (names without the 'transformer.' prefix, dtypes, shapes, bytes).

    Content, not file bytes: the same weights re-saved elsewhere match, another base of the same shapes
    does not. Results are cached by file path, size and modification time, so a load hashes a base once.
    """
    files = weight_files(source)
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    cache_file = cache_root() / "fingerprints.json"
    try:
        known = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    import torch
    from safetensors import safe_open

    per_tensor = {}  # short name -> "dtype|shape|sha256 of bytes"; combined in name order across shards
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                short = name.removeprefix("transformer.")
                if short.endswith(_NOT_WEIGHTS):
                    continue
                tensor = f.get_tensor(name).contiguous()
                raw = tensor.view(-1).view(torch.uint8).numpy()
                per_tensor[short] = f"{tensor.dtype}|{tuple(tensor.shape)}|{hashlib.sha256(raw).hexdigest()}"
    digest = hashlib.sha256()
    for short in sorted(per_tensor):
        digest.update(f"{short}|{per_tensor[short]}\n".encode())
    fingerprint = digest.hexdigest()
    known[key] = fingerprint
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{id(known)}.tmp")
    tmp.write_text(json.dumps(known))
    tmp.replace(cache_file)
    return fingerprint


def tensor_shapes(safetensors_file: Path) -> dict[str, list[int]]:
    """Tensor names and shapes from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    with safe_open(str(safetensors_file), framework="pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}


def build_manifest(folder: Path, *, name: str, base: dict, dataset: dict, recipe_sha256: str | None, versions: dict) -> dict:
    """The manifest of a finished adapter folder: what it was trained on, and every file's sha256."""
    files = {
        p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "base": base,
        "dataset": dataset,
        "recipe_sha256": recipe_sha256,
        "versions": versions,
        "files": files,
        "tensors": tensor_shapes(folder / "adapter_model.safetensors"),
    }


def write_manifest(folder: Path, **fields) -> dict:
    manifest = build_manifest(folder, **fields)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def folder_problems(folder: Path, manifest: dict) -> list[str]:
    """What differs between an adapter folder and its manifest: files missing, extra, truncated or changed,
    tensors missing or extra or reshaped."""
    problems = []
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    listed = manifest.get("files", {})
    for missing in sorted(set(listed) - present):
        problems.append(f"file {missing} is missing")
    for extra in sorted(present - set(listed)):
        problems.append(f"file {extra} is not in the manifest")
    for file_name in sorted(set(listed) & present):
        path, record = folder / file_name, listed[file_name]
        size = path.stat().st_size
        if size != record["bytes"]:
            problems.append(f"file {file_name} has {size} bytes, {record['bytes']} were written (truncated or changed)")
        elif file_sha256(path) != record["sha256"]:
            problems.append(f"file {file_name} was modified since it was written (sha256 differs)")
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        try:
            shapes = tensor_shapes(weights)
        except Exception as err:  # a damaged header: safetensors raises its own error types
            return problems or [f"adapter_model.safetensors cannot be read: {err}"]
        expected = manifest.get("tensors", {})
        for missing in sorted(set(expected) - set(shapes)):
            problems.append(f"tensor {missing} is missing")
        for extra in sorted(set(shapes) - set(expected)):
            problems.append(f"tensor {extra} is not in the manifest")
        for name in sorted(set(shapes) & set(expected)):
            if list(shapes[name]) != list(expected[name]):
                problems.append(f"tensor {name} has shape {shapes[name]}, expected {expected[name]}")
    return problems
