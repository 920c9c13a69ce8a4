"""Bring a PEFT LoRA adapter trained elsewhere into the store, checked against its base, with a manifest."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import model_card, provenance, sources
from .cache import read_json
from .errors import ToolkitError
from .model import base_from, tokenizer_from
from .store import AdapterStore

PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


def import_adapter(path: str | Path, store: AdapterStore, name: str | None = None, base: str | None = None,
                   overwrite: bool = False) -> Path:
    folder = Path(path).expanduser()
    config = read_json(folder / "adapter_config.json")
    if not config:
        raise ToolkitError(f"{folder}: no readable adapter_config.json; point at a folder written by peft's save_pretrained")
    if config.get("peft_type") != "LORA":
        raise ToolkitError(
            f"{folder}: a {config.get('peft_type')!r} adapter; only LoRA adapters can be imported: "
            "point at a folder that holds one (peft_type LORA)"
        )
    if not (folder / "adapter_model.safetensors").is_file():
        raise ToolkitError(
            f"{folder}: no adapter_model.safetensors; only safetensors are loaded (re-save it with "
            "peft's save_pretrained(safe_serialization=True))"
        )
    name = name or re.sub(r"[^A-Za-z0-9_-]+", "-", folder.resolve().name).strip("-_")[:64]
    store.path(name)  # checks the name
    if store.exists(name) and not overwrite:
        raise ToolkitError(f"adapter {name!r} already exists in {store.root}; pass --name NAME or --overwrite")
    base_name = base or config.get("base_model_name_or_path")
    if not base_name:
        raise ToolkitError(f"{folder}: the adapter does not name its base; pass --base ID_OR_DIR")
    key = "--base" if base else "base_model_name_or_path in adapter_config.json (or --base)"
    source = sources.model_source(base_name, config.get("revision") or "main", key=key)
    problems = _shape_problems(folder, config, base_from(source))
    if problems:
        raise ToolkitError(*(f"{folder}: {p} on base {base_name}; pass --base with the model it was trained on" for p in problems))
    tokenizer = tokenizer_from(source)
    store.check_unlocked(name)
    with store.lock(name), store.saving(name) as tmp:
        for file_name in PEFT_FILES:
            shutil.copyfile(folder / file_name, tmp / file_name)
        (tmp / "README.md").write_text(model_card.render_imported(name, base_name, folder), encoding="utf-8")
        provenance.write_manifest(
            tmp,
            name=name,
            base={
                "name": str(Path(base_name).resolve()) if Path(base_name).is_dir() else base_name,
                "revision": config.get("revision") or "main",
                "weights_sha256": provenance.weights_fingerprint(source),
                "tokenizer_sha256": provenance.tokenizer_fingerprint(tokenizer),
            },
            dataset={"imported_from": str(folder.resolve())},
            recipe_sha256=None,
            versions={},
        )
    return store.path(name)


def _shape_problems(folder: Path, config: dict, base_model) -> list[str]:
    """Tensors the adapter lacks, has in excess, or shapes it wrongly, for this base and this config."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict

    try:
        lora = LoraConfig.from_pretrained(str(folder))
        expected = get_peft_model_state_dict(get_peft_model(base_model, lora))
    except ValueError as err:  # peft: "Target modules ... not found in the base model"
        return [str(err).splitlines()[0]]
    present = provenance.tensor_shapes(folder / "adapter_model.safetensors")
    problems = [f"tensor {n} is missing" for n in sorted(set(expected) - set(present))]
    problems += [f"tensor {n} is unexpected" for n in sorted(set(present) - set(expected))]
    problems += [
        f"tensor {n} has shape {present[n]}, the base needs {list(expected[n].shape)}"
        for n in sorted(set(present) & set(expected))
        if list(present[n]) != list(expected[n].shape)
    ]
    return problems
