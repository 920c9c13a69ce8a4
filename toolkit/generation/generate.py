"""Generate with the active adapter, or with several in one batch, each row with its own.

    model, tokenizer = toolkit.load(["wikitext103", "poems"])   # one base in memory, both adapters on it
    toolkit.generate(model, tokenizer, "The", greedy=True)       # -> ["..."], with wikitext103
    toolkit.use(model, "poems")                                   # switch: no reloading
    toolkit.generate_batch(model, tokenizer, [("The", "poems"), ("The", None)])   # one batch, each its own

Every path goes through `_run`: prompts are tokenized, cut to fit the context, padded on the left, and
only the new tokens are decoded; a sequence ends at EOS. A prompt/completion adapter gets its prompt as it
was trained (`prompt_tokens`): EOS, then the prompt inside the adapter's template; the caller types only
the prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from ..data.examples import prompt_ids
from ..errors import ToolkitError, param
from ..modeling.mixing import mix, parse_weights
from ..modeling.prompting import prompt_template
from ..modeling.switching import BASE, active_adapter, base_alone, base_of, layers_enabled, require_loaded
from ..store.loading import load
from ..store.store import AdapterStore
from .settings import GenerationSettings

log = logging.getLogger(__name__)


def open_model(
    adapters: Sequence[str] = (),
    mix_spec: str | None = None,
    *,
    base: str | None = None,
    store=None,
    strict: bool = True,
    precision: str = "fp32",
):
    """(model, tokenizer) to generate with: the base (`base`, else the adapters' own) with every named
    adapter, those of `mix_spec` too, loaded once; the mix active if given, else the first adapter."""
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    weights = parse_weights(mix_spec) if mix_spec else {}
    names = list(dict.fromkeys([*adapters, *weights]))
    if not names and not base:
        raise ToolkitError(
            f"nothing to generate with: name adapters ({param('adapters')}), a mix ({param('mix')}) or a model "
            f"({param('model')})"
        )
    started = time.perf_counter()
    model, tokenizer = load(names or None, base=base, store=store, strict=strict, precision=precision)
    if weights:
        mix(model, weights)
    label = base_of(model).config.name_or_path
    log.info(
        "loaded %s%s in %.1f s", label, f" with {', '.join(names)}" if names else "", time.perf_counter() - started
    )
    return model, tokenizer


def generate(
    model,
    tokenizer,
    prompt: str,
    settings: GenerationSettings | None = None,
    *,
    stream: Callable[[str], None] | None = None,
    **overrides,
) -> list[str]:
    """The texts generated after `prompt` by the active adapter (or the base), one per sequence.

    `overrides` are GenerationSettings fields (max_new_tokens=20, greedy=True, seed=0, ...). `stream`
    receives the text piece by piece as it is generated, then a newline (one sequence only).
    """
    settings = replace(settings or GenerationSettings(), **overrides)
    if stream is not None and settings.num_sequences > 1:
        raise ToolkitError("streaming shows one sequence; use num_sequences=1 or no stream")
    ids = prompt_tokens(tokenizer, prompt, prompt_template(model, active_adapter(model)))
    return _run(model, tokenizer, [ids] * settings.num_sequences, settings, stream=stream)


def prompt_tokens(tokenizer, prompt: str, template: str | None = None) -> list[int]:
    """The tokens a model continues for `prompt`. `template`: a prompt/completion adapter's (its recipe's
    data.template; "" for the prompt alone), which gives EOS then the templated prompt, as each example
    began in training; None (a text adapter, the base) gives the prompt's own tokens, BOS for an empty one."""
    if template is not None:
        return prompt_ids(tokenizer, template, prompt)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    # An empty prompt starts a document, as GPT-2 saw them in training.
    return ids or [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]


def generate_batch(
    model,
    tokenizer,
    requests: Sequence[tuple[str, str | None]],
    settings: GenerationSettings | None = None,
    **overrides,
) -> list[str]:
    """One batch for several (prompt, adapter) requests, each row with its own adapter (None: the base),
    whichever is active. Returns the texts in request order, `num_sequences` per request."""
    settings = replace(settings or GenerationSettings(), **overrides)
    if not requests:
        return []
    prompts, names = [], []
    for prompt, adapter in requests:
        prompts += [prompt_tokens(tokenizer, prompt, prompt_template(model, adapter))] * settings.num_sequences
        names += [adapter or BASE] * settings.num_sequences
    wanted = sorted({n for n in names if n != BASE})
    if not wanted:
        with base_alone(model):
            return _run(model, tokenizer, prompts, settings)
    require_loaded(model, wanted)
    # peft routes rows by `adapter_names` only while the adapter layers are enabled.
    with layers_enabled(model):
        return _run(model, tokenizer, prompts, settings, adapter_names=names)


def _run(
    model,
    tokenizer,
    prompts: list[list[int]],
    settings: GenerationSettings,
    adapter_names: list[str] | None = None,
    stream: Callable[[str], None] | None = None,
) -> list[str]:
    inputs = _encode(model, tokenizer, prompts, settings.max_new_tokens)
    # A sequence ends at EOS whatever the checkpoint's generation config says (the rest of its row is padding).
    kwargs = settings.generate_kwargs() | {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
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
    new = output[:, inputs["input_ids"].shape[1] :].cpu()
    tokens = sum(_length(row, tokenizer.eos_token_id) for row in new)
    log.info("%s new tokens in %.2f s (%.1f tokens/s)", f"{tokens:,}", seconds, tokens / max(seconds, 1e-9))
    return tokenizer.batch_decode(new, skip_special_tokens=True)


def _encode(model, tokenizer, prompts: list[list[int]], max_new_tokens: int) -> dict:
    """Prompts' token ids padded on the left; a prompt too long for the context keeps its last tokens."""
    context = base_of(model).config.n_positions
    room = context - max_new_tokens
    if room < 1:
        raise ToolkitError(
            f"{param('max_new_tokens')}: {max_new_tokens} leaves no room for a prompt in the context of "
            f"{context} tokens; "
            f"use at most {context - 1}"
        )
    rows = []
    for ids in prompts:
        if len(ids) > room:
            log.warning(
                "the prompt has %d tokens, more than the %d that fit before %d new ones in the context of %d: "
                "keeping its last %d",
                len(ids),
                room,
                max_new_tokens,
                context,
                room,
            )
            ids = ids[-room:]
        rows.append(ids)
    batch = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    device = base_of(model).device
    return {key: value.to(device) for key, value in batch.items()}


def _length(row: torch.Tensor, eos: int | None) -> int:
    """Tokens generated in a row: up to and including the first EOS (what follows is padding)."""
    if eos is not None:
        hits = (row == eos).nonzero()
        if len(hits):
            return int(hits[0]) + 1
    return len(row)


def _streamer(tokenizer, write: Callable[[str], None]):
    """transformers' TextStreamer (whole words, no prompt, no special tokens), writing to `write`."""
    from transformers import TextStreamer

    class Echo(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            text += "\n" if stream_end else ""  # ended before the figures are logged, as TextStreamer does
            if text:
                write(text)

    return Echo(tokenizer, skip_prompt=True, skip_special_tokens=True)
