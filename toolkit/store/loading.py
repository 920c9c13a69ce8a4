"""Load adapters from the store onto their base, after checking that they are what was trained, on it.

For example:

    model, tokenizer = toolkit.load("wikitext103")              # base + adapter, ready for generate()
    model, tokenizer = toolkit.load(["wikitext103", "poems"])   # both loaded once, the first active
    model = toolkit.load_adapter(model, tokenizer, "poems")     # one more onto a model in memory
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config.recipe import DORA_ON_QUANTIZED_CPU
from ..errors import ToolkitError, first_line, param
from ..files import read_json
from ..modeling.base import base_from
from ..modeling.fingerprints import tokenizer_fingerprint, weights_fingerprint
from ..modeling.precision import LoadPrecision
from ..modeling.prompting import record_prompt_format
from ..modeling.switching import adapters_disabled, base_of, loaded_adapters
from ..modeling.tokenizer import tokenizer_from
from ..records import ModelSource, RecordError
from ..sources.models import model_source
from .manifest import MANIFEST, WEIGHTS, Manifest, read_manifest
from .store import AdapterStore

log = logging.getLogger(__name__)

NO_MANIFEST = f"has no readable {MANIFEST}; bring adapters trained elsewhere in with `gpt2-adapt adapters import`"


def load(
    adapters: str | Sequence[str] | None = None,
    *,
    base: str | None = None,
    revision: str | None = None,
    store: AdapterStore | str | Path | None = None,
    strict: bool = True,
    precision: str = "fp32",
):
    """Return (model, tokenizer): the base with each named adapter loaded under its own name, the first
    active (`toolkit.use(model, name)` switches; `toolkit.use(model, None)` runs the base alone).

    The base is the one recorded with the first adapter; `base` points at a local copy of it instead (or
    names the model to load when no adapter is given), at hub `revision` (None: the one the adapters record,
    else main). Every adapter is verified against its manifest,
    the base's weights and the tokenizer: a mismatch raises ToolkitError, or with `strict=False` only
    warns. `precision`: "fp32", "bf16", "fp16" (the base's weights in that dtype), "int8", "nf4" or "fp4"
    (bitsandbytes).
    """
    precision = LoadPrecision(precision)
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    names = [adapters] if isinstance(adapters, str) else list(adapters or [])
    require_distinct(names)
    for name in names:
        manifest = _recorded(store.require(name))
        if strict and isinstance(manifest, str):  # say so now, before choosing a base finds none recorded
            raise ToolkitError(f"adapter {name!r}: {manifest}; pass {param('strict', False)} to load it anyway")
    if precision.quantization != "none" and not torch.cuda.is_available():
        dora = [name for name in names if read_json(store.path(name) / "adapter_config.json").get("use_dora")]
        if dora:
            raise ToolkitError(
                *(
                    f"adapter {name!r} uses DoRA: {DORA_ON_QUANTIZED_CPU}; load it with {param('precision')} "
                    "fp32, bf16 or fp16"
                    for name in dora
                )
            )
    base_name, recorded = _choose_base(store, names, base)
    revision = revision or recorded
    key = param("base") if base else f"the base of adapter {names[0]!r} (point {param('base')} at a copy of it)"
    source = model_source(base_name, revision, key=key)
    tokenizer = tokenizer_from(source, base_name, key=key)

    check_adapters(store, names, source, tokenizer, strict)

    model = base_from(source, quantization=precision.quantization, dtype=precision.dtype)
    if torch.cuda.is_available() and precision.quantization == "none":
        model = model.to("cuda")
    if not names:
        return model.eval(), tokenizer
    for name in names:
        model = attach(model, store, name)
    model.set_adapter(names[0])
    return model.eval(), tokenizer


def require_model_or_adapters(model: str | None, base: str | None, adapters: bool, mix: bool = False) -> None:
    """`model` is a plain model, run without adapters; the adapters' base is `base`. Given beside adapters,
    `model` would silently be taken for their base: refuse it."""
    if model and (adapters or mix):
        named = param("adapters") if adapters else param("mix")
        raise ToolkitError(
            f"{param('model')} and {named}: {param('model')} runs a plain model without adapters; "
            f"name the adapters' base with {param('base')}"
        )
    if model and base:
        raise ToolkitError(
            f"{param('model')} and {param('base')}: {param('model')} runs a plain model, {param('base')} is the "
            f"base of {param('adapters')}; give one"
        )


def require_distinct(names: Sequence[str]) -> None:
    """One adapter named twice would be one row, one layer set, counted twice: refuse it."""
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ToolkitError(
            f"{param('adapters')}: {', '.join(repeated)} named more than once; each adapter may be named once, "
            "remove the repeats"
        )


def check_adapters(store: AdapterStore, names: Sequence[str], source: ModelSource, tokenizer, strict: bool) -> None:
    """Verify each adapter against its manifest and the base about to be used: refuse, or warn if not strict.
    Whatever `strict` says, only a safetensors adapter is ever read."""
    problems = []
    base = {"weights": weights_fingerprint(source), "tokenizer": tokenizer_fingerprint(tokenizer)}  # once for all
    for name in names:
        folder = store.require(name)
        if not (folder / WEIGHTS).is_file():
            raise ToolkitError(
                f"adapter {name!r}: {folder} has no {WEIGHTS}; only safetensors weights are read (never pickle "
                "files such as adapter_model.bin): retrain it or import it again"
            )
        problems += [f"adapter {name!r}: {p}" for p in verify(folder, source, base)]
    if problems and strict:
        raise ToolkitError(*[f"{p}; pass {param('strict', False)} to load it anyway" for p in problems])
    for problem in problems:
        log.warning("%s (loading anyway, as asked)", problem)


def attach(model, store: AdapterStore, name: str, adapter_name: str | None = None):
    """Load a (verified) adapter onto a model under its store name (or `adapter_name`: the server loads a
    retrained adapter beside the version still generating); a plain base becomes a peft model. A
    prompt/completion adapter's format is recorded on the model (modeling.prompting)."""
    from peft import PeftModel
    from safetensors import SafetensorError

    folder = store.path(name)
    adapter_name = adapter_name or name
    try:
        prompt_format = store.prompt_format(name)
    except ToolkitError as err:  # only when loading past verification: the adapter then prompts as text
        log.warning("%s (prompting it with plain text)", err.problems[0])
        prompt_format = None
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=adapter_name, is_trainable=False)
        else:
            model = PeftModel.from_pretrained(model, folder, adapter_name=adapter_name, is_trainable=False)
        record_prompt_format(model, adapter_name, prompt_format)
        return model
    except torch.OutOfMemoryError:
        raise
    except (SafetensorError, RuntimeError, ValueError, TypeError, KeyError, OSError) as err:
        # Only when forced past verification: a damaged file, or weights that do not fit the base.
        raise ToolkitError(
            f"adapter {name!r}: peft cannot load {folder}: {first_line(err).rstrip(':')}; "
            "retrain it (train with overwrite) or import it again"
        ) from None


def verify(folder: Path, source: ModelSource, base: dict) -> list[str]:
    """What differs between an adapter and what it was trained with: its files, the base, the tokenizer.
    `base` holds the fingerprints of the base in use: {"weights": ..., "tokenizer": ...}."""
    manifest = _recorded(folder)
    if isinstance(manifest, str):
        return [manifest]
    problems = manifest.problems(folder)
    recorded = manifest.base
    actual = base["weights"]
    if recorded.weights_sha256 != actual:
        problems.append(
            f"it was trained on base {recorded.name!r} (weights {str(recorded.weights_sha256)[:12]}), "
            f"but {source.path} has other weights ({actual[:12]})"
        )
    if recorded.tokenizer_sha256 != base["tokenizer"]:
        problems.append(f"the tokenizer of {source.path} differs from the one it was trained with")
    return problems


def _recorded(folder: Path) -> Manifest | str:
    """The adapter's manifest, or what keeps it from being read: none, or a damaged one."""
    try:
        return read_manifest(folder) or NO_MANIFEST
    except RecordError as err:
        return str(err)


def _choose_base(store: AdapterStore, names: Sequence[str], base: str | None) -> tuple[str, str]:
    """The base (name, revision) to load `names` on, refusing adapters trained on different bases."""
    bases = {name: store.recorded_base(name) for name in names}
    weights = {b.weights_sha256 for b in bases.values() if b is not None and b.weights_sha256}
    if len(weights) > 1:
        listing = ", ".join(f"{name} on {b.name if b else None}" for name, b in bases.items())
        raise ToolkitError(
            f"these adapters were trained on different bases ({listing}); an update means something only on its "
            "own base: load, mix or merge adapters of one base together"
        )
    chosen = store.base_for(names, base)
    if chosen is None:
        if not names:
            raise ToolkitError(f"nothing to load: name an adapter, or a base model with {param('base')}")
        raise ToolkitError(f"adapter {names[0]!r} does not record its base; pass {param('base')}")
    return chosen.name, chosen.revision


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
