"""The manifest beside every adapter: what it was trained on (base, tokenizer, data, recipe), and every file's
sha256 and every tensor's shape, so that loading can refuse an adapter that is not what was trained.

peft loads an adapter with a missing tensor after only a warning, and onto a different base of the same
shapes without a word; the manifest lets the store refuse both.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from ..modeling.fingerprints import file_sha256, tensor_shapes
from ..records import RunIdentity

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


def build_manifest(
    folder: Path,
    *,
    name: str,
    base: dict,
    dataset: dict,
    recipe_sha256: str | None,
    versions: dict,
    trained_with: dict | None = None,
) -> dict:
    """The manifest of a finished adapter folder: what it was trained on, and every file's sha256.
    `trained_with`: how (the base's quantization, the LoRA variant, the data format and prompt template)."""
    files = {
        p.name: {"sha256": file_sha256(p), "bytes": p.stat().st_size}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    return {
        "format": MANIFEST_FORMAT,
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "base": base,
        "dataset": dataset,
        "recipe_sha256": recipe_sha256,
        **({"trained_with": trained_with} if trained_with is not None else {}),
        "versions": versions,
        "files": files,
        "tensors": tensor_shapes(folder / "adapter_model.safetensors"),
    }


def write_manifest(folder: Path, **fields) -> dict:
    manifest = build_manifest(folder, **fields)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def run_identity(manifest: dict) -> RunIdentity | None:
    """The identity of the run that trained the adapter (None for an imported one, which records none)."""
    recipe = manifest.get("recipe_sha256")
    base, dataset = manifest.get("base"), manifest.get("dataset")
    if not recipe or not isinstance(base, dict) or not isinstance(dataset, dict):
        return None
    return RunIdentity(recipe=recipe, data=dataset.get("fingerprint", ""), base=base.get("weights_sha256", ""))


def folder_problems(folder: Path, manifest: dict) -> list[str]:
    """What differs between an adapter folder and its manifest: files missing, extra, truncated or changed,
    tensors missing or extra or reshaped."""
    problems = []
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}
    listed = manifest.get("files", {})
    if not isinstance(listed, dict):
        return [f"{MANIFEST} lists no files"]
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
        except Exception as err:  # noqa: BLE001 - a damaged header: safetensors raises its own error types
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
