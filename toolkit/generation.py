"""Generate with adapters: switching the active adapter, loading one more, single prompts and mixed batches.

    model, tokenizer = toolkit.load(["wikitext103", "poems"])   # one base in memory, both adapters on it
    toolkit.generate(model, tokenizer, "The", greedy=True)       # -> ["..."], with wikitext103
    toolkit.use(model, "poems")                                   # switch: well under a millisecond
    toolkit.generate_batch(model, tokenizer, [("The", "poems"), ("The", None)])   # one batch, each its own

Every path goes through `_run`: prompts are tokenized, cut to fit the context, padded on the left, and
only the new tokens are decoded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from . import sources
from .decoding import GenerationSettings
from .errors import ToolkitError
from .store import AdapterStore

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


# Which adapter runs ---------------------------------------------------------------------------------


def loaded_adapters(model) -> list[str]:
    """The adapters loaded on a model (mixes included); none for a plain model."""
    return list(getattr(model, "peft_config", {}))


def use(model, adapter: str | None) -> None:
    """Make `adapter` the one that runs, or with None the base alone. Nothing is reloaded: peft switches
    which of the loaded LoRA weights the layers apply."""
    if adapter is None:
        if loaded_adapters(model):
            model.base_model.disable_adapter_layers()
        return
    _require_loaded(model, [adapter])
    model.base_model.enable_adapter_layers()  # undoes use(model, None); set_adapter alone does not
    model.set_adapter(adapter)


def active_adapter(model) -> str | None:
    """The adapter that runs, or None for the base alone."""
    if not loaded_adapters(model) or _adapters_disabled(model):
        return None
    return model.active_adapter


def load_adapter(model, tokenizer, name: str, *, store: AdapterStore | str | Path | None = None, strict: bool = True):
    """Load one more adapter from the store onto a loaded model, verified like toolkit.load does against
    the base in memory; returns the model (a new peft model when `model` was a plain base). Does not
    switch to it."""
    from .loading import attach, check_adapters

    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    if name in loaded_adapters(model):
        return model
    store.require(name)
    check_adapters(store, [name], sources.model_source(_base_of(model).config.name_or_path), tokenizer, strict)
    if not loaded_adapters(model):
        model = attach(model, store, name).eval()
        model.base_model.disable_adapter_layers()  # the plain base runs until use() says otherwise
        return model
    disabled = _adapters_disabled(model)
    model = attach(model, store, name)
    if disabled:  # a new adapter's layers start enabled; keep the base alone running
        model.base_model.disable_adapter_layers()
    return model


def open_model(adapters: Sequence[str] = (), mix: str | None = None, *, base: str | None = None, store=None,
               strict: bool = True, int8: bool = False, dtype: torch.dtype = torch.float32):
    """(model, tokenizer) for the generate command: the base (`base`, else the adapters' own) with every
    named adapter, those of `mix` too, loaded once; the mix active if given, else the first adapter."""
    from .loading import load
    from .mixing import check_same_base, parse_weights

    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    weights = parse_weights(mix) if mix else {}
    if weights:
        check_same_base(store, list(weights))
    names = list(dict.fromkeys([*adapters, *weights]))
    if not names and not base:
        raise ToolkitError("nothing to generate with: name --adapter NAME (repeatable), --mix or --model ID_OR_DIR")
    started = time.perf_counter()
    model, tokenizer = load(names or None, base=base, store=store, strict=strict, int8=int8, dtype=dtype)
    if weights:
        from .mixing import mix as add_mix

        add_mix(model, weights)
    label = _base_of(model).config.name_or_path
    log.info("loaded %s%s in %.1f s", label, f" with {', '.join(names)}" if names else "", time.perf_counter() - started)
    return model, tokenizer


# Generating -----------------------------------------------------------------------------------------


def generate(model, tokenizer, prompt: str, settings: GenerationSettings | None = None, *,
             stream: Callable[[str], None] | None = None, **overrides) -> list[str]:
    """The texts generated after `prompt` by the active adapter (or the base), one per sequence.

    `overrides` are GenerationSettings fields (max_new_tokens=20, greedy=True, seed=0, ...). `stream`
    receives the text piece by piece as it is generated, then a newline (one sequence only).
    """
    settings = replace(settings or GenerationSettings(), **overrides)
    if stream is not None and settings.num_sequences > 1:
        raise ToolkitError("streaming shows one sequence; use num_sequences=1 or no stream")
    return _run(model, tokenizer, [prompt] * settings.num_sequences, settings, stream=stream)


def generate_batch(model, tokenizer, requests: Sequence[tuple[str, str | None]], settings: GenerationSettings | None = None,
                   **overrides) -> list[str]:
    """One batch for several (prompt, adapter) requests, each row with its own adapter (None: the base),
    whichever is active. Returns the texts in request order, `num_sequences` per request."""
    settings = replace(settings or GenerationSettings(), **overrides)
    if not requests:
        return []
    prompts, names = [], []
    for prompt, adapter in requests:
        prompts += [prompt] * settings.num_sequences
        names += [adapter or BASE] * settings.num_sequences
    wanted = sorted({n for n in names if n != BASE})
    if not wanted:
        with _base_alone(model):
            return _run(model, tokenizer, prompts, settings)
    _require_loaded(model, wanted)
    # peft routes rows by `adapter_names` only while the adapter layers are enabled.
    with _layers_enabled(model):
        return _run(model, tokenizer, prompts, settings, adapter_names=names)


def read_requests(path: str) -> list[tuple[str, str | None]]:
    """(prompt, adapter) pairs from a JSONL file ("-": standard input) of {"prompt": ..., "adapter": ...}
    objects; a missing or null adapter means the base."""
    import click

    label = "standard input" if path == "-" else path
    try:
        with click.open_file(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise ToolkitError(f"--batch: cannot read {label}: {err.strerror or err}") from None
    requests, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            problems.append(f"--batch {label} line {number}: not JSON ({err.msg}); write one object per line")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            problems.append(f'--batch {label} line {number}: needs a "prompt" string, e.g. {{"prompt": "The", "adapter": "poems"}}')
            continue
        adapter = row.get("adapter")
        if adapter is not None and not isinstance(adapter, str):
            problems.append(f'--batch {label} line {number}: "adapter" must be an adapter name, or null for the base')
            continue
        unknown = sorted(set(row) - {"prompt", "adapter"})
        if unknown:
            problems.append(f'--batch {label} line {number}: unknown key(s) {", ".join(unknown)}; the keys are "prompt" and "adapter"')
            continue
        requests.append((row["prompt"], adapter or None))
    if not problems and not requests:
        problems.append(f"--batch: {label} holds no requests")
    if problems:
        raise ToolkitError(*problems)
    return requests


def _run(model, tokenizer, prompts: list[str], settings: GenerationSettings, adapter_names: list[str] | None = None,
         stream: Callable[[str], None] | None = None) -> list[str]:
    inputs = _encode(model, tokenizer, prompts, settings.max_new_tokens)
    kwargs = settings.generate_kwargs() | {"pad_token_id": tokenizer.pad_token_id}
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    if stream is not None:
        kwargs["streamer"] = _streamer(tokenizer, stream)
    if settings.seed is not None:
        torch.manual_seed(settings.seed)  # the sampler draws from torch's global generator
    started = time.perf_counter()
    with torch.inference_mode():
        output = model.generate(**inputs, **kwargs)
    seconds = time.perf_counter() - started
    new = output[:, inputs["input_ids"].shape[1]:].cpu()
    tokens = sum(_length(row, tokenizer.eos_token_id) for row in new)
    log.info("%s new tokens in %.2f s (%.1f tokens/s)", f"{tokens:,}", seconds, tokens / max(seconds, 1e-9))
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def _encode(model, tokenizer, prompts: list[str], max_new_tokens: int) -> dict:
    """Token ids padded on the left; a prompt too long for the context keeps its last tokens."""
    context = _base_of(model).config.n_positions
    room = context - max_new_tokens
    if room < 1:
        raise ToolkitError(
            f"--max-new-tokens: {max_new_tokens} leaves no room for a prompt in the context of {context} tokens; "
            f"use at most {context - 1}"
        )
    rows = []
    for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]:
        if not ids:  # an empty prompt starts a document, as GPT-2 saw them in training
            ids = [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]
        if len(ids) > room:
            log.warning(
                "the prompt has %d tokens, more than the %d that fit before %d new ones in the context of %d: "
                "keeping its last %d", len(ids), room, max_new_tokens, context, room,
            )
            ids = ids[-room:]
        rows.append(ids)
    batch = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    device = _base_of(model).device
    return {key: value.to(device) for key, value in batch.items()}


def _length(row: torch.Tensor, eos: int | None) -> int:
    """Tokens generated in a row: up to and including the first EOS (what follows is padding)."""
    if eos is not None:
        hits = (row == eos).nonzero()
        if len(hits):
            return int(hits[0]) + 1
    return len(row)


# The peft model's switches --------------------------------------------------------------------------


def _base_of(model):
    return model.get_base_model() if loaded_adapters(model) else model


def _adapters_disabled(model) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return next((m.disable_adapters for m in model.modules() if isinstance(m, BaseTunerLayer)), False)


def _require_loaded(model, names: Sequence[str]) -> None:
    loaded = loaded_adapters(model)
    missing = [n for n in names if n not in loaded]
    if missing:
        raise ToolkitError(
            f"adapter {', '.join(map(repr, missing))} is not loaded (loaded: {', '.join(loaded) or 'none'}); "
            "load it with toolkit.load([...]) or toolkit.load_adapter(model, tokenizer, name)"
        )


@contextlib.contextmanager
def _layers_enabled(model):
    disabled = _adapters_disabled(model)
    if disabled:
        model.base_model.enable_adapter_layers()
    try:
        yield
    finally:
        if disabled:
            model.base_model.disable_adapter_layers()


@contextlib.contextmanager
def _base_alone(model):
    if not loaded_adapters(model) or _adapters_disabled(model):
        yield
        return
    model.base_model.disable_adapter_layers()
    try:
        yield
    finally:
        model.base_model.enable_adapter_layers()


def _streamer(tokenizer, write: Callable[[str], None]):
    """transformers' TextStreamer (whole words, no prompt, no special tokens), writing to `write`."""
    from transformers import TextStreamer

    class Echo(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            text += "\n" if stream_end else ""  # ended before the figures are logged, as TextStreamer does
            if text:
                write(text)

    return Echo(tokenizer, skip_prompt=True, skip_special_tokens=True)
