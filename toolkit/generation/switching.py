"""Which adapter runs: switching between loaded adapters, loading one more, running the base alone.

Nothing is reloaded to switch: peft switches which of the loaded LoRA weights the layers apply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import ToolkitError
from ..records import ModelSource
from ..store.loading import attach, check_adapters
from ..store.store import AdapterStore

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


def loaded_adapters(model) -> list[str]:
    """The adapters loaded on a model (mixes included); none for a plain model."""
    return list(getattr(model, "peft_config", {}))


def use(model, adapter: str | None) -> None:
    """Make `adapter` the one that runs, or with None the base alone."""
    if adapter is None:
        if loaded_adapters(model):
            model.base_model.disable_adapter_layers()
        return
    require_loaded(model, [adapter])
    model.base_model.enable_adapter_layers()  # undoes use(model, None); set_adapter alone does not
    model.set_adapter(adapter)


def active_adapter(model) -> str | None:
    """The adapter that runs, or None for the base alone."""
    if not loaded_adapters(model) or adapters_disabled(model):
        return None
    return model.active_adapter


def load_adapter(model, tokenizer, name: str, *, store: AdapterStore | str | Path | None = None, strict: bool = True):
    """Load one more adapter from the store onto a loaded model, verified like toolkit.load does against
    the base in memory; returns the model (a new peft model when `model` was a plain base). Does not
    switch to it."""
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    if name in loaded_adapters(model):
        return model
    store.require(name)
    check_adapters(store, [name], ModelSource(base_of(model).config.name_or_path), tokenizer, strict)
    if not loaded_adapters(model):
        model = attach(model, store, name).eval()
        model.base_model.disable_adapter_layers()  # the plain base runs until use() says otherwise
        return model
    disabled = adapters_disabled(model)
    model = attach(model, store, name)
    if disabled:  # a new adapter's layers start enabled; keep the base alone running
        model.base_model.disable_adapter_layers()
    return model


def base_of(model):
    """The transformers model under a peft model (the model itself when plain). Not `get_base_model()`: it
    looks up peft's "active" adapter, which after the last adapter is deleted names one that is gone."""
    from peft import PeftModel

    return model.base_model.model if isinstance(model, PeftModel) else model


def adapters_disabled(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return next((m.disable_adapters for m in model.modules() if isinstance(m, BaseTunerLayer)), False)


def require_loaded(model, names: Sequence[str]) -> None:
    loaded = loaded_adapters(model)
    missing = [n for n in names if n not in loaded]
    if missing:
        raise ToolkitError(
            f"adapter {', '.join(map(repr, missing))} is not loaded (loaded: {', '.join(loaded) or 'none'}); "
            "load it with toolkit.load([...]) or toolkit.load_adapter(model, tokenizer, name)"
        )


@contextlib.contextmanager
def layers_enabled(model):
    disabled = adapters_disabled(model)
    if disabled:
        model.base_model.enable_adapter_layers()
    try:
        yield
    finally:
        if disabled:
            model.base_model.disable_adapter_layers()


@contextlib.contextmanager
def base_alone(model):
    if not loaded_adapters(model) or adapters_disabled(model):
        yield
        return
    model.base_model.disable_adapter_layers()
    try:
        yield
    finally:
        model.base_model.enable_adapter_layers()
