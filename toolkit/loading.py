"""Load adapters from the store onto their base, after checking that they are what was trained, on it.

    model, tokenizer = toolkit.load("wikitext103")              # base + adapter, ready for generate()
    model, tokenizer = toolkit.load(["wikitext103", "poems"])   # both loaded once, the first active
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from . import sources
from .errors import ToolkitError, first_line
from .model import base_from, tokenizer_from
from .provenance import MANIFEST, folder_problems, tokenizer_fingerprint, weights_fingerprint
from .cache import read_json
from .store import AdapterStore

log = logging.getLogger(__name__)

NO_MANIFEST = f"has no readable {MANIFEST}; bring adapters trained elsewhere in with `gpt2-adapt adapters import`"


def load(
    adapters: str | Sequence[str] | None = None,
    *,
    base: str | None = None,
    store: AdapterStore | str | Path | None = None,
    strict: bool = True,
    int8: bool = False,
    dtype: torch.dtype = torch.float32,
):
    """Return (model, tokenizer): the base with each named adapter loaded under its own name, the first
    active (`model.set_adapter(name)` switches; `with model.disable_adapter():` runs the base alone).

    The base is the one recorded with the first adapter; `base` points at a local copy of it instead (or
    names the model to load when no adapter is given). Every adapter is verified against its manifest,
    the base's weights and the tokenizer: a mismatch raises ToolkitError, or with `strict=False` only
    warns. `int8` loads the base in 8-bit (bitsandbytes); `dtype` is the dtype of a full-precision base.
    """
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    names = [adapters] if isinstance(adapters, str) else list(adapters or [])
    if len(set(names)) != len(names):
        raise ToolkitError(f"adapters {', '.join(names)}: each adapter may be named once")
    manifests = {name: _manifest(store, name, strict) for name in names}
    base_name, revision = _choose_base(base, manifests)
    key = "base" if base else f"the base of adapter {names[0]!r} (point base= or --model at a copy of it)"
    source = sources.model_source(base_name, revision, key=key)
    tokenizer = tokenizer_from(source)

    check_adapters(store, names, source, tokenizer, strict)

    model = base_from(source, int8=int8, dtype=dtype)
    if torch.cuda.is_available() and not int8:
        model = model.to("cuda")
    if not names:
        return model.eval(), tokenizer
    for name in names:
        model = attach(model, store, name)
    model.set_adapter(names[0])
    return model.eval(), tokenizer


def check_adapters(store: AdapterStore, names: Sequence[str], source: dict, tokenizer, strict: bool) -> None:
    """Verify each adapter against its manifest and the base about to be used: refuse, or warn if not strict."""
    problems = []
    base = {"weights": weights_fingerprint(source), "tokenizer": tokenizer_fingerprint(tokenizer)}  # once for all
    for name in names:
        recorded = read_json(store.path(name) / MANIFEST)  # not the stand-in that strict=False makes
        problems += [f"adapter {name!r}: {p}" for p in verify(store.path(name), recorded, source, base)]
    if problems and strict:
        raise ToolkitError(*[f"{p}; pass --force (strict=False) to load it anyway" for p in problems])
    for problem in problems:
        log.warning("%s (loading anyway, as asked)", problem)


def attach(model, store: AdapterStore, name: str):
    """Load a (verified) adapter onto a model under its store name; a plain base becomes a peft model."""
    from peft import PeftModel
    from safetensors import SafetensorError

    folder = store.path(name)
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, folder, adapter_name=name, is_trainable=False)
    except torch.OutOfMemoryError:
        raise
    except (SafetensorError, RuntimeError, ValueError, TypeError, KeyError, OSError) as err:
        # Only when forced past verification: a damaged file, or weights that do not fit the base.
        raise ToolkitError(
            f"adapter {name!r}: peft cannot load {folder}: {first_line(err).rstrip(':')}; "
            "retrain it (train --overwrite) or import it again"
        ) from None


def verify(folder: Path, manifest: dict, source: dict, base: dict) -> list[str]:
    """What differs between an adapter and what it was trained with: its files, the base, the tokenizer.
    `base` holds the fingerprints of the base in use: {"weights": ..., "tokenizer": ...}."""
    if not manifest:
        return [NO_MANIFEST]
    problems = folder_problems(folder, manifest)
    recorded = manifest.get("base", {})
    actual = base["weights"]
    if recorded.get("weights_sha256") != actual:
        problems.append(
            f"it was trained on base {recorded.get('name')!r} (weights {str(recorded.get('weights_sha256'))[:12]}), "
            f"but {source['pretrained_model_name_or_path']} has other weights ({actual[:12]})"
        )
    if recorded.get("tokenizer_sha256") != base["tokenizer"]:
        problems.append(f"the tokenizer of {source['pretrained_model_name_or_path']} differs from the one it was trained with")
    return problems


def _manifest(store: AdapterStore, name: str, strict: bool) -> dict:
    folder = store.require(name)
    manifest = read_json(folder / MANIFEST)
    if not manifest:
        if strict:  # say so now, before choosing a base finds that the manifest names none
            raise ToolkitError(f"adapter {name!r}: {NO_MANIFEST}; pass --force (strict=False) to load it anyway")
        # Without a record, the base can only come from peft's own config.
        config = read_json(folder / "adapter_config.json")
        manifest = {"base": {"name": config.get("base_model_name_or_path"), "revision": config.get("revision")}}
    return manifest


def _choose_base(base: str | None, manifests: dict[str, dict]) -> tuple[str, str]:
    bases = {name: m.get("base", {}) for name, m in manifests.items()}
    weights = {b.get("weights_sha256") for b in bases.values() if b.get("weights_sha256")}
    if len(weights) > 1:
        listing = ", ".join(f"{name} on {b.get('name')}" for name, b in bases.items())
        raise ToolkitError(f"these adapters were trained on different bases ({listing}); load them separately")
    if base:
        return base, "main"
    if not bases:
        raise ToolkitError("nothing to load: name an adapter, or a base model with base=/--model")
    first = next(iter(bases.values()))
    if not first.get("name"):
        raise ToolkitError(f"adapter {next(iter(bases))!r} does not record its base; pass base= (or --base)")
    return first["name"], first.get("revision") or "main"
