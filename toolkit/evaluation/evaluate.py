"""An evaluation run: which models (a plain model, a base and its adapters, a model in memory) on which
texts (a recipe's evaluation text, dataset splits, files, strings) and lm-evaluation-harness tasks, each
loaded once, every text scored by one protocol.

    rows = toolkit.evaluate(["poems"], files=["test.txt"], context=256)   # the base row, then poems
    rows = toolkit.evaluate(model="gpt2", texts=["Some text.", "Another document."])
    rows = toolkit.evaluate("poems", tasks=["wikitext"], limit=20)        # the harness's task, adapter in memory

Everything a user can get wrong (arguments, texts, tasks and their data, the model, the protocol against
the model's context) is checked before the first window is scored.

Adapters trained on prompt/completion examples are scored on examples: every text is read with their
recipe's columns and template, each example scored on its own, on its completion's tokens only.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..config.recipe import DataSpec, Recipe, load_recipe
from ..data.detokenize import DETOKENIZERS
from ..data.documents import open_source, read_files, read_split
from ..data.examples import encode_examples, example_stream
from ..data.streams import token_stream
from ..distributed import launched, process
from ..errors import ToolkitError, param
from ..modeling.base import gpt2_config
from ..modeling.mixing import label as row_label
from ..modeling.mixing import mix as mix_adapters
from ..modeling.mixing import parse_weights
from ..modeling.prompting import prompt_format
from ..modeling.switching import active_adapter, base_of, running
from ..records import EvalResult, Protocol
from ..sources.models import model_source
from ..store.loading import load, require_distinct, require_model_or_adapters
from ..store.store import AdapterStore
from ..threads import set_threads
from .harness import Tasks, prepare_tasks, run_tasks
from .protocol import check_protocol, tokens_needed
from .scoring import score
from .settings import EvalOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Text:
    label: str  # how results name it
    documents: object  # a datasets.Dataset, one document (or prompt/completion example) per row
    text_column: str
    examples: DataSpec | None = None  # prompt/completion examples: the recipe's data section that reads them


@dataclass(frozen=True)
class ModelsToScore:
    """A loaded model and the rows to score with it: peft adapters (mixes included) by name, None for the
    base (every adapter switched off, or a plain model as it is)."""

    model: object
    tokenizer: object
    name: str  # how results name the model: the base of the adapters, or the plain model
    rows: tuple[str | None, ...]

    @property
    def config(self):
        return base_of(self.model).config

    def with_row(self, adapter: str) -> ModelsToScore:
        return replace(self, rows=(*self.rows, adapter))


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
    as_text: bool = False,
) -> list[Text]:
    """The texts to score: a recipe's evaluation documents (exactly those its training evaluated on), then
    each dataset's split, each file pattern's files, and each string (one document). With `examples` (the
    data section of a prompt/completion recipe, see `examples_format`), datasets and files are read as
    its examples; a prompt/completion recipe's own evaluation text is its examples. `as_text`: the caller
    chose to score prompt/completion adapters on plain text (then `examples` is None)."""
    import datasets as hf_datasets

    if examples is not None and text_column != "text":
        raise ToolkitError(
            f"{param('text_column')}: these adapters read prompt/completion examples from their recipe's "
            f"columns {examples.prompt_column!r} and {examples.completion_column!r}; leave it out, or "
            f"pass {param('as_text', True)} to score that column as plain text"
        )
    if as_text and recipe is not None and recipe.data.examples:
        raise ToolkitError(
            f"{param('as_text', True)}: the recipe's evaluation text is prompt/completion examples; "
            f"give plain text in {param('files')} or {param('datasets')}, or leave it out"
        )
    out = []
    if recipe is not None:
        _, documents = open_source(recipe.data).splits()
        own = recipe.data if recipe.data.examples else None
        out.append(
            Text(f"{recipe_label or recipe.adapter_name} (eval)", documents, recipe.data.text_column, examples or own)
        )
    for name in datasets:
        documents, chosen = read_split(name, config, split, text_column, examples=examples)
        out.append(Text(f"{name}{' ' + config if config else ''} [{chosen}]", documents, text_column, examples))
    for pattern in files:
        out.append(Text(pattern, read_files(pattern, text_column, examples=examples), text_column, examples))
    if examples is not None and texts:
        raise ToolkitError(
            f"{param('texts')}: these adapters were trained on prompt/completion examples; "
            f"give them in {param('files')} or {param('datasets')}, with their columns, or pass "
            f"{param('as_text', True)} to score the strings as plain text"
        )
    for number, text in enumerate(texts, 1):
        if not isinstance(text, str) or not text.strip():
            raise ToolkitError(
                f"{param('texts')}: text {number} is {'blank' if isinstance(text, str) else 'not a string'}; "
                "give text to score"
            )
        out.append(Text(f"text {number}", hf_datasets.Dataset.from_dict({"text": [text]}), "text"))
    labels = [t.label for t in out]
    if len(set(labels)) != len(labels):
        raise ToolkitError(f"the same text is named twice ({', '.join(labels)}); name each once")
    return out


def load_models(
    adapters: Sequence[str] = (), model: str | None = None, store=None, strict: bool = True, precision: str = "fp32"
) -> ModelsToScore:
    """The plain `model`; or the base (`model`: a local copy of it) with each adapter loaded once and
    verified. Rows: the model; or the base and then each adapter."""
    adapters = list(adapters)
    if not adapters and not model:
        raise ToolkitError(f"nothing to score: name adapters ({param('adapters')}) or a model ({param('model')})")
    key = param("base") if adapters else param("model")
    if model:
        gpt2_config(model_source(model, key=key), model, key=key)  # say so before loading any weights
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    lm, tokenizer = load(adapters or None, base=model, store=store, strict=strict, precision=precision)
    name = model or _recorded_base(adapters[0], store) or base_of(lm).config.name_or_path
    return ModelsToScore(lm, tokenizer, name, (None, *adapters))


def evaluate_models(
    loaded: ModelsToScore,
    options: EvalOptions,
    texts: Sequence[Text] = (),
    tasks: Tasks | None = None,
    default_context: int | None = None,
) -> list[EvalResult]:
    """Score every row of `loaded` on every text, then on every harness task: one EvalResult each, in
    that order (row by row). `default_context` (a recipe's block size) is the context when
    options.context is None, else the examples' block size (of their adapter's recipe), else the model's."""
    set_threads("evaluation", options.threads)
    config = loaded.config
    # Examples are scored at their adapter's block size unless told otherwise: their prompts are then cut
    # (data.truncate) exactly as in training.
    own_block = next((text.examples.block_size for text in texts if text.examples), None)
    protocol = options.protocol(default_context or own_block or config.n_positions)
    if any(text.examples for text in texts):
        protocol = _examples_protocol(protocol, options, texts)
    check_protocol(protocol, config.n_positions, loaded.name)
    limit = tokens_needed(protocol, options.max_tokens) if options.max_tokens else None
    detokenize = DETOKENIZERS.get(options.detokenize)
    streams = []
    for text in texts:
        with _naming(text):
            if text.examples:  # each example on its own, as training's evaluation scores them
                documents = (
                    text.documents.select(range(min(options.limit, len(text.documents))))
                    if options.limit
                    else text.documents
                )
                spec = replace(text.examples, block_size=protocol.context)
                found = encode_examples(documents, spec, loaded.tokenizer, "the text", param("context"))
                streams.append(example_stream(found))
            else:
                streams.append(
                    token_stream(
                        text.documents,
                        text.text_column,
                        loaded.tokenizer,
                        limit,
                        max_documents=options.limit,
                        by_document=protocol.by_document,
                        detokenize=detokenize,
                    )
                )
    rank, _ = process()
    results = []
    for adapter in loaded.rows:
        label = None if adapter is None else row_label(adapter)
        common = {"model": loaded.name, "adapter": label, "precision": options.precision}
        with running(loaded.model, adapter):
            for text, stream in zip(texts, streams):
                with _naming(text):
                    scored = score(
                        loaded.model,
                        stream,
                        protocol,
                        batch_size=options.batch_size,
                        max_tokens=options.max_tokens,
                        progress=options.progress and rank == 0,
                        label=f"{label or 'base'} on {text.label}",
                    )
                log.info(
                    "%s on %s: perplexity %.3f over %s tokens",
                    label or "base",
                    text.label,
                    scored.score.perplexity,
                    f"{scored.score.tokens:,}",
                )
                results.append(
                    EvalResult(
                        dataset=text.label,
                        protocol=protocol,
                        score=scored.score,
                        documents=stream.documents,
                        seconds=scored.seconds,
                        tokens_per_second=scored.tokens_per_second,
                        **common,
                    )
                )
            if tasks and rank == 0:  # the harness scores on one process
                for task in run_tasks(
                    loaded.model,
                    loaded.tokenizer,
                    tasks,
                    limit=options.limit,
                    batch_size=options.batch_size,
                    max_length=protocol.context,
                    progress=options.progress,
                ):
                    results.append(
                        EvalResult(
                            dataset=task.name,
                            protocol=None,
                            score=None,
                            documents=task.documents,
                            seconds=task.seconds,
                            tokens_per_second=None,
                            task=task.score,
                            **common,
                        )
                    )
    return results


def evaluate(
    adapters=None,
    *,
    mix: str | Sequence[str] | Mapping[str, float] | None = None,
    model: str | None = None,
    base: str | None = None,
    tokenizer=None,
    texts: Sequence[str] = (),
    files: Sequence[str] = (),
    datasets: Sequence[str] = (),
    recipe: Recipe | str | Path | None = None,
    overrides: Sequence[str] = (),
    tasks: Sequence[str] = (),
    include_paths: Sequence[str] = (),
    config: str = "",
    split: str = "",
    text_column: str = "text",
    store: AdapterStore | str | None = None,
    **options,
) -> list[EvalResult]:
    """Perplexity (and bits per byte, byte and word perplexity) on strings (`texts`, one document each),
    files, dataset splits or a recipe's evaluation text, and lm-evaluation-harness `tasks` (found among the
    harness's and in `include_paths`), of adapters and their base, a mix, a plain `model`, or a model in
    memory.

    `adapters`: a name or names from the store (the base is scored beside them; `base` points at a local
    copy of it), or a model already loaded (`toolkit.load`, after `toolkit.mix` or `toolkit.use`, or any
    GPT-2 model with its `tokenizer`), scored as it is. `mix`: weights of stored adapters, as toolkit.mix
    takes them ("a=0.7,b=0.3" or {"a": 0.7, "b": 0.3}), scored as one more row after the adapters. `recipe`:
    a Recipe, or the path of a recipe file (with `overrides`, "key=value"). `options` are EvalOptions
    fields: context, stride, by_document, detokenize, max_tokens, limit, batch_size, precision, strict,
    as_text, threads, progress. Returns one EvalResult per (row, text or task). Under torchrun the windows
    are shared among the processes, and every process returns the same results.

    Prompt/completion adapters (by name, or loaded by `toolkit.load`: the active one) are scored on examples
    read with their recipe's columns and template, as `gpt2-adapt eval` scores them; `as_text=True` scores
    them on plain text instead (`text_column`, every token).
    """
    settings = EvalOptions(**options)
    in_memory = adapters is not None and not isinstance(adapters, (str, list, tuple))
    names = [] if in_memory else [adapters] if isinstance(adapters, str) else list(adapters or [])
    require_distinct(names)
    weights = parse_weights(mix) if mix else {}
    require_model_or_adapters(model, base, bool(names) or in_memory, bool(weights))
    if in_memory and tokenizer is None:
        raise ToolkitError(f"{param('tokenizer')}: a model in memory needs its tokenizer too")
    if in_memory and weights:
        raise ToolkitError(f"{param('mix')}: mix a model in memory with toolkit.mix(model, weights), then score it")
    if overrides and not isinstance(recipe, (str, Path)):
        raise ToolkitError(
            f"{param('overrides')}: changes a recipe's keys; give {param('recipe')} too, or drop {param('overrides')}"
        )
    if include_paths and not tasks:
        raise ToolkitError(
            f"{param('include_paths')}: adds a folder of harness tasks; name the tasks with {param('tasks')}"
        )
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    recipe_label = ""
    if isinstance(recipe, (str, Path)):  # results name its text by the file
        recipe_label, recipe = str(recipe), load_recipe(recipe, overrides)
    settings = settings.settled(recipe)
    if not (recipe or datasets or files or texts or tasks):  # before the adapters are read for their format
        raise ToolkitError(
            f"no text to score: give {param('recipe')}, {param('datasets')}, {param('files')} or {param('tasks')}"
        )
    stored = list(dict.fromkeys([*names, *weights]))
    if settings.as_text:
        examples = None
    elif in_memory:  # as its loading recorded: how its active adapter reads text (generate prompts it so too)
        examples = prompt_format(adapters, active_adapter(adapters))
    else:
        examples = examples_format(stored, store)
    chosen = read_texts(
        recipe,
        recipe_label,
        datasets,
        config,
        split,
        text_column,
        files,
        texts,
        examples=examples,
        as_text=settings.as_text,
    )
    found = prepare_tasks(tasks, include_paths) if tasks else None
    with launched():
        if in_memory:
            loaded = ModelsToScore(adapters, tokenizer, str(adapters.config.name_or_path), (active_adapter(adapters),))
        else:
            loaded = load_models(
                stored,
                model or base or (recipe.model.name if recipe and not stored else None),
                store,
                settings.strict,
                settings.precision,
            )
            loaded = replace(loaded, rows=(None, *names))
        if weights:
            loaded = loaded.with_row(mix_adapters(loaded.model, weights))
        default_context = recipe.data.block_size if recipe else None
        return evaluate_models(loaded, settings, chosen, found, default_context=default_context)


def _examples_protocol(protocol: Protocol, options: EvalOptions, texts: Sequence[Text]) -> Protocol:
    """The protocol for prompt/completion examples, which are scored whole, each on its own."""
    if not all(text.examples for text in texts):
        raise ToolkitError("these texts mix prompt/completion examples and plain text; score them in two runs")
    chosen = [
        name
        for name in ("stride", "max_tokens", "by_document", "detokenize")
        if getattr(options, name) not in (None, False) and not (name == "stride" and options.stride == protocol.context)
    ]
    if chosen:
        raise ToolkitError(
            f"{' and '.join(param(name) for name in chosen)}: prompt/completion examples are scored "
            f"whole, each on its own; leave {'it' if len(chosen) == 1 else 'them'} out"
        )
    return replace(protocol, examples=True)


def examples_format(adapters: Sequence[str], store: AdapterStore) -> DataSpec | None:
    """How adapters read text: None when they were trained on text (or imported), else the data section of
    their prompt/completion recipe (columns, template, truncation), which must be the same for all."""
    formats = {name: store.prompt_format(name) for name in adapters}
    readings = {
        None if spec is None else (spec.prompt_column, spec.completion_column, spec.template, spec.truncate)
        for spec in formats.values()
    }
    if len(readings) > 1:
        kinds = ", ".join(f"{name}: {'prompt/completion' if spec else 'text'}" for name, spec in formats.items())
        raise ToolkitError(
            f"{param('adapters')}: these adapters read text differently ({kinds}, or other columns "
            "or templates); evaluate them in separate runs"
        )
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
    base = store.base_for([adapter])
    return base.name if base else None
