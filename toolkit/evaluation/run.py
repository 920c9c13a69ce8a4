"""An evaluation run: which models (a plain model, or a base and its adapters) on which texts (a recipe's
evaluation text, dataset splits, files, strings), each loaded once and every pair scored by one protocol.

    rows = toolkit.evaluate(["poems"], files=["test.txt"], context=256)   # the base row, then poems
    rows = toolkit.evaluate(model="gpt2", texts=["Some text.", "Another document."])

Everything a user can get wrong (arguments, texts, the model, the protocol against the model's context) is
checked before the first window is scored.

Adapters trained on prompt/completion examples are scored on examples: every text is read with their
recipe's columns and template, each example scored on its own, on its completion's tokens only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..config.recipe import DataSpec, Recipe
from ..data.documents import open_source, read_files, read_split
from ..data.examples import encode_examples
from ..data.packing import example_stream
from ..data.streams import token_stream
from ..errors import ToolkitError, param
from ..modeling.base import gpt2_config
from ..modeling.precision import LoadPrecision
from ..records import EvalResult, Protocol
from ..sources.models import model_source
from ..store.loading import load
from ..store.store import AdapterStore
from .protocol import check_protocol, tokens_needed
from .scoring import score

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Text:
    label: str  # how results name it
    documents: object  # a datasets.Dataset, one document (or prompt/completion example) per row
    text_column: str
    examples: DataSpec | None = None  # prompt/completion examples: the recipe's data section that reads them


@dataclass(frozen=True)
class EvalOptions:
    context: int | None = None  # tokens per window; None: the recipe's block size, else the model's context
    stride: int | None = None  # None: the context (disjoint blocks)
    max_tokens: int | None = None  # score only the first N tokens of each text; None: all
    batch_size: int = 0  # windows per forward pass; 0: as many as the device's token budget allows
    precision: str = "fp32"  # "fp32", "bf16", "fp16" (the base's weights) or "int8" (bitsandbytes)
    strict: bool = True  # refuse an adapter that fails verification against its base
    progress: bool = False  # a progress bar on standard error

    def __post_init__(self):
        problems = []
        try:
            LoadPrecision(self.precision)
        except ToolkitError as err:
            problems += err.raw
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append(f"{param('max_tokens')}: must be at least 1 (got {self.max_tokens})")
        if self.batch_size < 0:
            problems.append(f"{param('batch_size')}: must be >= 0, 0 meaning automatic (got {self.batch_size})")
        if self.context is not None and self.context < 2:
            problems.append(f"{param('context')}: must be at least 2 tokens (got {self.context})")
        if self.stride is not None and self.stride < 1:
            problems.append(f"{param('stride')}: must be at least 1 (got {self.stride})")
        if problems:
            raise ToolkitError(*problems)


def read_texts(
    recipe: Recipe | None = None,
    recipe_label: str = "",
    datasets: Sequence[str] = (),
    config: str = "",
    split: str = "",
    text_column: str = "text",
    files: Sequence[str] = (),
    texts: Sequence[str] = (),
    examples: DataSpec | None = None,
) -> list[Text]:
    """The texts to score: a recipe's evaluation documents (exactly those its training evaluated on), then
    each dataset's split, each file pattern's files, and each string (one document). With `examples` (the
    data section of a prompt/completion recipe, see `examples_format`), datasets and files are read as
    its examples; a prompt/completion recipe's own evaluation text is its examples."""
    import datasets as hf_datasets

    out = []
    if recipe is not None:
        _, documents = open_source(recipe.data).splits()
        own = recipe.data if recipe.data.examples else None
        out.append(Text(f"{recipe_label or recipe.adapter_name} (eval)", documents, recipe.data.text_column, examples or own))
    for name in datasets:
        documents, chosen = read_split(name, config, split, text_column, examples=examples)
        out.append(Text(f"{name}{' ' + config if config else ''} [{chosen}]", documents, text_column, examples))
    for pattern in files:
        out.append(Text(pattern, read_files(pattern, text_column, examples=examples), text_column, examples))
    if examples is not None and texts:
        raise ToolkitError(f"{param('texts')}: these adapters were trained on prompt/completion examples; "
                           f"give them in {param('files')} or {param('datasets')}, with their columns")
    for number, text in enumerate(texts, 1):
        if not isinstance(text, str) or not text.strip():
            raise ToolkitError(f"{param('texts')}: text {number} is {'blank' if isinstance(text, str) else 'not a string'}; give text to score")
        out.append(Text(f"text {number}", hf_datasets.Dataset.from_dict({"text": [text]}), "text"))
    if not out:
        raise ToolkitError(f"no text to score: give {param('recipe')}, {param('datasets')}, {param('files')} or {param('texts')}")
    labels = [t.label for t in out]
    if len(set(labels)) != len(labels):
        raise ToolkitError(f"the same text is named twice ({', '.join(labels)}); name each once")
    return out


def run(texts: list[Text], options: EvalOptions, adapters: Sequence[str] = (), model: str | None = None,
        store=None, default_context: int | None = None) -> list[EvalResult]:
    """Score every row (the plain `model`; or the base and then each adapter) on every text.

    `model` with adapters is the base to load them on (default: the base recorded with them).
    `default_context` (a recipe's block size) is the context when options.context is None.
    """
    adapters = list(adapters)
    if not adapters and not model:
        raise ToolkitError(f"nothing to score: name adapters ({param('adapters')}) or a model ({param('model')})")
    key = param("base") if adapters else param("model")
    if model:
        gpt2_config(model_source(model, key=key), model, key=key)  # say so before loading any weights
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    lm, tokenizer = load(adapters or None, base=model, store=store, strict=options.strict, precision=options.precision)
    base = lm.get_base_model() if adapters else lm
    base_label = model or _recorded_base(adapters[0], store) or base.config.name_or_path
    config = base.config
    context = options.context or default_context or config.n_positions
    examples = any(text.examples for text in texts)
    if examples and not all(text.examples for text in texts):
        raise ToolkitError("these texts mix prompt/completion examples and plain text; score them in two runs")
    if examples and (options.stride not in (None, context) or options.max_tokens):
        raise ToolkitError(f"{param('stride')} and {param('max_tokens')}: prompt/completion examples are scored "
                           "whole, each on its own; leave both out")
    protocol = Protocol(context, options.stride or context, examples=examples)
    check_protocol(protocol, config.n_positions, base_label)

    limit = tokens_needed(protocol, options.max_tokens) if options.max_tokens else None
    streams = []
    for text in texts:
        with _naming(text):
            if text.examples:  # packed into blocks of the context, as training packed them
                spec = replace(text.examples, block_size=context)
                streams.append(example_stream(encode_examples(text.documents, spec, tokenizer, "the text", param("context")),
                                              context))
            else:
                streams.append(token_stream(text.documents, text.text_column, tokenizer, limit))
    rows = [None, *adapters] if adapters else [None]
    results = []
    for adapter in rows:
        if adapter is not None:
            lm.set_adapter(adapter)
        # The base row of an adapter run is the same model with every adapter switched off.
        with lm.disable_adapter() if adapters and adapter is None else contextlib.nullcontext():
            for text, stream in zip(texts, streams):
                label = f"{adapter or 'base'} on {text.label}"
                with _naming(text):
                    scored = score(lm, stream, protocol, batch_size=options.batch_size, max_tokens=options.max_tokens,
                                   progress=options.progress, label=label)
                log.info("%s: perplexity %.3f over %s tokens", label, scored.score.perplexity, f"{scored.score.tokens:,}")
                results.append(EvalResult(
                    model=base_label, adapter=adapter, dataset=text.label, protocol=protocol, score=scored.score,
                    documents=stream.documents, precision=options.precision, seconds=scored.seconds,
                    tokens_per_second=scored.tokens_per_second,
                ))
    return results


def evaluate(
    adapters: str | Sequence[str] | None = None,
    *,
    model: str | None = None,
    base: str | None = None,
    texts: Sequence[str] = (),
    files: Sequence[str] = (),
    datasets: Sequence[str] = (),
    recipe: Recipe | None = None,
    config: str = "",
    split: str = "",
    text_column: str = "text",
    store: AdapterStore | str | None = None,
    **options,
) -> list[EvalResult]:
    """Perplexity (and bits per byte, byte and word perplexity) of adapters and their base, or of a plain
    `model`, on strings (`texts`, one document each), files, dataset splits or a recipe's evaluation text.

    `adapters`: a name or names from the store (the base is scored beside them); `base` points at a local
    copy of their base. `options` are EvalOptions fields: context, stride, max_tokens, batch_size, precision,
    strict. Returns one EvalResult per (row, text).
    """
    names = [adapters] if isinstance(adapters, str) else list(adapters or [])
    if model and names:
        raise ToolkitError(f"{param('model')} and {param('adapters')}: a plain model has no adapters; "
                           f"give the adapters' base as {param('base')}")
    settings = EvalOptions(**options)
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    chosen = read_texts(recipe, "", datasets, config, split, text_column, files, texts,
                        examples=examples_format(names, store))
    return run(chosen, settings, adapters=names, model=model or base or (recipe.model.name if recipe and not names else None),
               store=store, default_context=recipe.data.block_size if recipe else None)


def examples_format(adapters: Sequence[str], store: AdapterStore) -> DataSpec | None:
    """How adapters read text: None when they were trained on text (or imported), else the data section of
    their prompt/completion recipe (columns, template, truncation), which must be the same for all."""
    formats = {}
    for name in adapters:
        recipe = store.trained_recipe(name)
        formats[name] = recipe.data if recipe is not None and recipe.data.examples else None
    readings = {None if spec is None else (spec.prompt_column, spec.completion_column, spec.template, spec.truncate)
                for spec in formats.values()}
    if len(readings) > 1:
        kinds = ", ".join(f"{name}: {'prompt/completion' if spec else 'text'}" for name, spec in formats.items())
        raise ToolkitError(f"{param('adapters')}: these adapters read text differently ({kinds}, or other columns "
                           "or templates); evaluate them in separate runs")
    return next(iter(formats.values()), None)


@contextlib.contextmanager
def _naming(text: Text):
    """Put the text's name in front of a problem found in it (the engine does not know names)."""
    try:
        yield
    except ToolkitError as err:
        raise err.prefixed(f"{text.label}: ") from None


def _recorded_base(adapter: str, store: AdapterStore) -> str | None:
    """The base as the adapter's manifest names it (a hub id or builtin as given, a folder as a path)."""
    base = store.info(adapter).manifest.get("base", {})
    return base.get("name") if isinstance(base, dict) else None
