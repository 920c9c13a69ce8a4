"""How each adapter loaded on a model is prompted: the one home of a prompt/completion adapter's format.

Loading records it (store.loading.attach), and so does a mix of such adapters; generation reads it to put a
prompt to each adapter as it was trained, evaluation to read its examples as training did, the server to
template each request. Text adapters and the base have no format: their prompt is the text itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config.recipe import DataSpec

# The formats travel with the model they describe, so that every holder of the model sees the same ones.
_FORMATS = "gpt2_adapt_prompt_formats"


def prompt_formats(model) -> dict[str, DataSpec]:
    """The prompt/completion adapters loaded on a model, each with its recipe's data section: its template,
    columns, truncation and block size."""
    return dict(getattr(model, _FORMATS, {}))


def prompt_format(model, adapter: str | None) -> DataSpec | None:
    """How `adapter` reads its examples (None: a text adapter, or the base)."""
    return getattr(model, _FORMATS, {}).get(adapter)


def prompt_template(model, adapter: str | None) -> str | None:
    """The template `adapter` puts a prompt in ("" for the prompt alone); None: a text adapter, or the base,
    which continue the prompt's own tokens."""
    spec = prompt_format(model, adapter)
    return None if spec is None else spec.template


def record_prompt_format(model, adapter: str, spec: DataSpec | None) -> None:
    """Record that `adapter`, loaded on `model`, reads prompt/completion examples as `spec` says (None: text)."""
    formats = {**getattr(model, _FORMATS, {})}
    if spec is None:
        formats.pop(adapter, None)
    else:
        formats[adapter] = spec
    setattr(model, _FORMATS, formats)
