"""Bring a PEFT LoRA adapter trained elsewhere into the store, checked against its base, with a manifest."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..config.names import check_name, slug
from ..config.recipe import MAX_LORA_RANK
from ..errors import ToolkitError, param
from ..files import json_problem, read_json
from ..modeling.base import base_from
from ..modeling.fingerprints import tensor_shapes, tokenizer_fingerprint, weights_fingerprint
from ..modeling.lora import layer_names
from ..modeling.tokenizer import tokenizer_from
from ..sources.models import model_source, recorded_name
from . import card
from .manifest import WEIGHTS, BaseRecord, DataRecord, write_manifest
from .store import AdapterStore

log = logging.getLogger(__name__)

PEFT_FILES = ("adapter_config.json", WEIGHTS)


def import_adapter(
    path: str | Path, store: AdapterStore, name: str | None = None, base: str | None = None, overwrite: bool = False
) -> Path:
    folder = Path(path).expanduser()
    config = _read_config(folder)
    name = name or slug(folder.resolve().name)
    check_name(name)
    if store.exists(name) and not overwrite:
        raise ToolkitError(
            f"adapter {name!r} already exists in {store.root}; pass {param('name')} with another name, "
            f"or {param('overwrite', True)}"
        )
    named = config.get("base_model_name_or_path")
    base_name = base or named
    if not base_name:
        raise ToolkitError(
            f"{folder}: the adapter does not name its base; pass {param('base')} with the model it was trained on"
        )
    if base and named and base != named:
        log.warning("%s names its base %r; checking it against %s instead, as asked", folder, named, base)
    key = param("base") if base else f"base_model_name_or_path in adapter_config.json (or {param('base')})"
    source = model_source(base_name, config.get("revision") or "main", key=key)
    problems = _shape_problems(folder, config, base_from(source), base_name)
    if problems:
        raise ToolkitError(*(f"{folder}: {p}" for p in problems))
    tokenizer = tokenizer_from(source, base_name, key=key)
    store.check_writable()
    store.check_unlocked(name)
    with store.lock(name), store.saving(name) as tmp:
        for file_name in PEFT_FILES:
            shutil.copyfile(folder / file_name, tmp / file_name)
        (tmp / "README.md").write_text(card.imported_card(name, base_name, folder), encoding="utf-8")
        write_manifest(
            tmp,
            name=name,
            base=BaseRecord(
                recorded_name(base_name),
                config.get("revision") or "main",
                weights_fingerprint(source),
                tokenizer_fingerprint(tokenizer),
            ),
            dataset=DataRecord(imported_from=str(folder.resolve())),
            recipe_sha256=None,
            versions={},
        )
    return store.path(name)


def _read_config(folder: Path) -> dict:
    """The adapter's config, refused unless it is a LoRA config in safetensors with sensible numbers."""
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ToolkitError(f"{folder}: no adapter_config.json; point at a folder written by peft's save_pretrained")
    problem = json_problem(config_file)
    if problem:
        raise ToolkitError(f"{folder}: {problem}; point at a folder written by peft's save_pretrained")
    config = read_json(config_file)
    if config.get("peft_type") != "LORA":
        raise ToolkitError(
            f"{folder}: a {config.get('peft_type')!r} adapter; only LoRA adapters can be imported: "
            "point at a folder that holds one (peft_type LORA)"
        )
    if not (folder / WEIGHTS).is_file():
        raise ToolkitError(
            f"{folder}: no adapter_model.safetensors; only safetensors are loaded (re-save it with "
            "peft's save_pretrained(safe_serialization=True))"
        )
    r, alpha, dropout = config.get("r"), config.get("lora_alpha"), config.get("lora_dropout", 0.0)
    problems = []
    if not isinstance(r, int) or isinstance(r, bool) or not 1 <= r <= MAX_LORA_RANK:
        problems.append(f"its rank r = {r!r} is not a whole number between 1 and {MAX_LORA_RANK}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        problems.append(f"its lora_alpha = {alpha!r} is not a positive number")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        problems.append(f"its lora_dropout = {dropout!r} is not in [0, 1)")
    if problems:
        raise ToolkitError(
            *(f"{folder}: adapter_config.json: {p}; fix the file or save the adapter again with peft" for p in problems)
        )
    return config


def _shape_problems(folder: Path, config: dict, base_model, base_name: str) -> list[str]:
    """Tensors the adapter lacks, has in excess, or shapes wrongly, for this base and this config."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict

    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    names = [n for n, _ in base_model.named_modules()]
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        return [
            (
                f"its target_modules ({', '.join(unmatched)}) match no layer of {base_name} (a GPT-2's are "
                f"{', '.join(layer_names(names))}); it was trained for another architecture: import an adapter of a "
                "GPT-2 model"
            )
        ]
    try:
        present = tensor_shapes(folder / WEIGHTS)
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
        return [f"adapter_model.safetensors cannot be read ({err}); save the adapter again with peft"]
    try:
        lora = LoraConfig.from_pretrained(str(folder))
        expected = get_peft_model_state_dict(get_peft_model(base_model, lora))
    except (ValueError, TypeError) as err:  # peft's own checks of the config
        return [f"peft refuses its config ({str(err).splitlines()[0]}); save the adapter again with peft"]
    hint = f"; pass {param('base')} with the model it was trained on"
    problems = [f"tensor {n} is missing on base {base_name}{hint}" for n in sorted(set(expected) - set(present))]
    problems += [f"tensor {n} is unexpected on base {base_name}{hint}" for n in sorted(set(present) - set(expected))]
    problems += [
        f"tensor {n} has shape {present[n]}, base {base_name} needs {list(expected[n].shape)}{hint}"
        for n in sorted(set(present) & set(expected))
        if list(present[n]) != list(expected[n].shape)
    ]
    return problems
