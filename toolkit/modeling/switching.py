"""Which adapter runs on a model in memory: one of those loaded, or the base alone.

Nothing is reloaded to switch: peft switches which of the loaded LoRA weights the layers apply. Generation,
evaluation and the server all switch through here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from ..errors import ToolkitError

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


@contextlib.contextmanager
def running(model, adapter: str | None):
    """Within: `adapter` runs (None: the base alone); then what ran before."""
    before = active_adapter(model)
    use(model, adapter)
    try:
        yield
    finally:
        use(model, before)


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
