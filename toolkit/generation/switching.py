"""Loading one more adapter from the store onto a model in memory (`toolkit.load_adapter`).

Switching between loaded adapters (`use`) is toolkit/modeling/switching.py's.
"""

from __future__ import annotations

from pathlib import Path

from ..modeling.switching import adapters_disabled, base_of, loaded_adapters
from ..records import ModelSource
from ..store.loading import attach, check_adapters
from ..store.store import AdapterStore


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
