"""An evaluation run: which models (a plain model, or a base and its adapters) on which texts (a recipe's
evaluation text, dataset splits, files), each loaded once and every pair scored by one protocol.

Everything a user can get wrong (options, texts, the model, the protocol against the model's context) is
checked before the first window is scored.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from . import data
from .errors import ToolkitError
from .evaluation import Protocol, score, token_stream, tokens_needed
from .model import gpt2_config

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Text:
    label: str  # how results name it
    documents: object  # a datasets.Dataset, one document per row
    text_column: str


@dataclass(frozen=True)
class EvalOptions:
    context: int | None = None  # tokens per window; None: the recipe's block size, else the model's context
    stride: int | None = None  # None: the context (disjoint blocks)
    max_tokens: int | None = None  # score only the first N tokens of each text; None: all
    batch_size: int = 0  # windows per forward pass; 0: as many as CPU_/CUDA_TOKENS_PER_BATCH allow
    precision: str = "fp32"  # weights of a full-precision base: "fp32" or "bf16"
    int8: bool = False  # the base's linear layers in 8-bit (bitsandbytes)
    strict: bool = True  # refuse an adapter that fails verification against its base
    progress: bool = False  # a progress bar on standard error

    def __post_init__(self):
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"--precision: must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if self.int8 and self.precision != "fp32":
            problems.append("--int8 and --precision bf16: choose one (an 8-bit base keeps its other weights as loaded)")
        if self.max_tokens is not None and self.max_tokens < 1:
            problems.append(f"--max-tokens: must be at least 1 (got {self.max_tokens})")
        if self.batch_size < 0:
            problems.append(f"--batch-size: must be >= 0, 0 meaning automatic (got {self.batch_size})")
        if self.context is not None and self.context < 2:
            problems.append(f"--context: must be at least 2 tokens (got {self.context})")
        if self.stride is not None and self.stride < 1:
            problems.append(f"--stride: must be at least 1 (got {self.stride})")
        if problems:
            raise ToolkitError(*problems)

    @property
    def precision_label(self) -> str:
        return "int8" if self.int8 else self.precision


def read_texts(
    recipe=None,
    recipe_label: str = "",
    datasets: tuple[str, ...] = (),
    config: str = "",
    split: str = "",
    text_column: str = "text",
    files: tuple[str, ...] = (),
) -> list[Text]:
    """The texts to score: a recipe's evaluation documents (exactly those its training evaluated on),
    then each dataset's split, then each file pattern's files."""
    texts = []
    if recipe is not None:
        _, documents = data.open_source(recipe.data).splits()
        texts.append(Text(f"{recipe_label} (eval)", documents, recipe.data.text_column))
    for name in datasets:
        documents, chosen = data.read_split(name, config, split, text_column)
        texts.append(Text(f"{name}{' ' + config if config else ''} [{chosen}]", documents, text_column))
    for pattern in files:
        texts.append(Text(pattern, data.read_files(pattern, text_column), text_column))
    if not texts:
        raise ToolkitError("no text to score: give --recipe, --dataset or --files")
    labels = [t.label for t in texts]
    if len(set(labels)) != len(labels):
        raise ToolkitError(f"the same text is named twice ({', '.join(labels)}); name each once")
    return texts


def run(texts: list[Text], options: EvalOptions, adapters=(), model: str | None = None, store=None,
        default_context: int | None = None) -> list[dict]:
    """Score every row (the plain `model`; or the base and then each adapter) on every text.

    `model` with adapters is the base to load them on (default: the base recorded with them).
    `default_context` (a recipe's block size) is the context when options.context is None.
    """
    from .loading import load

    adapters = list(adapters)
    if not adapters and not model:
        raise ToolkitError("nothing to score: name --adapter NAME (repeatable) or --model ID_OR_DIR")
    if model:
        gpt2_config(model, key="--model")  # say so before loading any weights
    dtype = PRECISIONS[options.precision]
    lm, tokenizer = load(adapters or None, base=model, store=store, strict=options.strict, int8=options.int8, dtype=dtype)
    base = lm.get_base_model() if adapters else lm
    base_label = model or _recorded_base(adapters[0], store) or base.config.name_or_path
    config = base.config
    context = options.context or default_context or config.n_positions
    protocol = Protocol(context, options.stride or context)
    protocol.check(config.n_positions, base_label)

    limit = tokens_needed(protocol, options.max_tokens) if options.max_tokens else None
    streams = []
    for text in texts:
        with _naming(text):
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
                    result = score(
                        lm, stream, protocol, batch_size=options.batch_size, max_tokens=options.max_tokens,
                        progress=options.progress, label=label,
                    )
                log.info("%s: perplexity %.3f over %s tokens", label, result["perplexity"], f"{result['tokens']:,}")
                results.append(
                    {"model": base_label, "adapter": adapter, "dataset": text.label, **result,
                     "precision": options.precision_label}
                )
    return results


@contextlib.contextmanager
def _naming(text: Text):
    """Put the text's name in front of a problem found in it (the engine does not know names)."""
    try:
        yield
    except ToolkitError as err:
        raise ToolkitError(*(f"{text.label}: {p}" for p in err.problems)) from None


def _recorded_base(adapter: str, store) -> str | None:
    """The base as the adapter's manifest names it (a hub id or builtin as given, a folder as a path)."""
    from .store import AdapterStore

    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    return store.info(adapter)["manifest"].get("base", {}).get("name")
