"""The records that cross module boundaries and land on disk or in `--json` output, one definition each.

Each is a frozen dataclass with `to_json()` (the documented keys, in order) and `from_json(dict)`. Records read
from disk come from files a person may have edited or damaged: `from_json` raises `RecordError` naming what
is wrong rather than a KeyError deep inside a command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Self


class RecordError(ValueError):
    """A record on disk that is not what the toolkit wrote: the message says what is wrong."""


def _require_object(data, what: str) -> dict:
    if not isinstance(data, dict):
        raise RecordError(f"{what} is not a JSON object (it is a {type(data).__name__})")
    return data


def _fields(cls, data: dict, what: str) -> dict:
    """The known keys of `data` for dataclass `cls`; a missing key without a default is an error."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            out[f.name] = data[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f"{what} has no {f.name!r}")
    return out


class JsonRecord:
    """A flat record's JSON: its fields in order, read back by name (unknown keys ignored, missing ones named)."""

    described_as: ClassVar[str]  # how an error names it: "a run identity"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data) -> Self:
        return cls(**_fields(cls, _require_object(data, cls.described_as), cls.described_as))


# ---------------------------------------------------------------- where a model comes from


@dataclass(frozen=True)
class ModelSource(JsonRecord):
    """What `from_pretrained` is given for a model: a local folder or a hub id (with its revision)."""

    described_as = "a model source"

    path: str  # pretrained_model_name_or_path
    revision: str | None = None  # hub revision; None for a local folder
    local_files_only: bool = False  # a hub id served from the local cache (the Hub cannot be reached)

    @property
    def is_local(self) -> bool:
        return self.revision is None

    def from_pretrained(self) -> dict:
        """Keyword arguments for `from_pretrained` (`pretrained_model_name_or_path`, ...)."""
        kwargs: dict = {"pretrained_model_name_or_path": self.path}
        if self.revision is not None:
            kwargs["revision"] = self.revision
        if self.local_files_only:
            kwargs["local_files_only"] = True
        return kwargs


# ---------------------------------------------------------------- what a run is


@dataclass(frozen=True)
class RunIdentity(JsonRecord):
    """What decides a training run's result: the resolved recipe, the packed data and the base's weights
    (sha256 fingerprints each). Two runs with the same identity train the same adapter."""

    described_as = "a run identity"

    recipe: str
    data: str
    base: str

    def changes(self, other: RunIdentity) -> list[str]:
        """What differs from `other`: "recipe", "data", "base" (an empty fingerprint is not compared)."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if getattr(other, f.name) and getattr(self, f.name) and getattr(other, f.name) != getattr(self, f.name)
        ]


# ---------------------------------------------------------------- what a score is


@dataclass(frozen=True)
class Protocol:
    """How a text is cut into windows for scoring (see toolkit.evaluation.protocol for the exact rules):
    every token of the text is scored exactly once, the first given EOS."""

    context: int  # positions per window: each predicts the next token at each of its positions
    stride: int  # tokens each window predicts beyond the one before; = context: disjoint windows
    by_document: bool = False  # each document scored on its own (from EOS); else the documents as one stream
    detokenize: str | None = None  # the detokenizer applied to the scored text ("wikitext"); counts stay the original's
    examples: bool = False  # prompt/completion examples: each on its own, its completion (and EOS) alone scored

    @property
    def kind(self) -> str:
        if self.examples:
            return "examples"
        return "disjoint" if self.stride == self.context else "sliding"

    @property
    def label(self) -> str:
        """A short name: "disjoint windows of 256 tokens", "sliding windows of 256 tokens, stride 64", with
        ", by document" and ", wikitext-detokenized" where they apply."""
        if self.examples:
            return f"each example on its own (up to {self.context} tokens), its completion scored"
        windows = (
            f"disjoint windows of {self.context} tokens"
            if self.kind == "disjoint"
            else f"sliding windows of {self.context} tokens, stride {self.stride}"
        )
        return (
            windows
            + (", by document" if self.by_document else "")
            + (f", {self.detokenize}-detokenized" if self.detokenize else "")
        )

    def describe(self, tokens: int | None = None) -> str:
        """The rule in one sentence, with the number of tokens scored when given."""
        if self.examples:
            count = f"{tokens:,} completion tokens, each" if tokens is not None else "every completion token"
            return (
                f"{count} of the prompt/completion examples scored once given its example's tokens before it "
                f"(the EOS in front, the templated prompt, the completion so far), each example on its own in "
                f"a window of up to {self.context}; the EOS after each completion is scored, the prompt is not"
            )
        count = f"{tokens:,} tokens, each" if tokens is not None else "every token"
        over = "each document on its own" if self.by_document else "the documents as one stream"
        context = (
            "" if self.kind == "disjoint" else f" (at least {self.context - self.stride + 1} past the first window)"
        )
        windows = f"windows of {self.context}" + (f", stride {self.stride}" if self.kind == "sliding" else "")
        return (
            f"{count} scored once given the tokens before it in its window{context}: {windows} "
            f"over {over}, the first window starting at EOS, the last moved back to end at the last token"
            + (
                f"; the text {self.detokenize}-detokenized, words and bytes counted on the original"
                if self.detokenize
                else ""
            )
        )

    def to_json(self, tokens: int | None = None) -> dict:
        return {
            "kind": self.kind,
            "context": self.context,
            "stride": self.stride,
            "by_document": self.by_document,
            "detokenize": self.detokenize,
            "examples": self.examples,
            "description": self.describe(tokens),
        }

    @classmethod
    def from_json(cls, data: dict) -> Protocol:
        data = _require_object(data, "a protocol")
        return cls(
            int(data["context"]),
            int(data.get("stride", data["context"])),
            bool(data.get("by_document", False)),
            data.get("detokenize"),
            bool(data.get("examples", False)),
        )


@dataclass(frozen=True)
class Score(JsonRecord):
    """A text's score: token perplexity from summed NLL, and the tokenizer-free figures where counted."""

    described_as = "a score"

    perplexity: float
    mean_nll: float  # nats per scored token
    tokens: int  # tokens scored
    bytes: int | None = None  # UTF-8 bytes those tokens stand for
    words: int | None = None  # words that begin in them
    bits_per_byte: float | None = None
    byte_perplexity: float | None = None
    word_perplexity: float | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None or k in _SCORE_CORE}


_SCORE_CORE = ("perplexity", "mean_nll", "tokens")


# ---------------------------------------------------------------- what training records


@dataclass(frozen=True)
class TrainStats(JsonRecord):
    described_as = "train"

    steps: int
    epochs: float
    tokens: int  # tokens trained on, all processes, resumes included
    seconds: float  # of training, evaluations left out, resumes included
    tokens_per_second: float

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Kept(JsonRecord):
    """Which of a run's adapters was saved (`training.keep`), and why the run ended where it did."""

    described_as = "kept"

    keep: str  # "last" or "best"
    step: int  # the step whose weights were saved: the last, or that of the best evaluation
    stopped_early: bool = False  # early stopping ended the run before its last step

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingMetrics:
    """What `metrics.json` holds beside each trained adapter."""

    base: Score  # the base's score on the evaluation text, before training
    adapted: Score  # the saved adapter's (keep = "best": of its evaluation)
    protocol: Protocol
    precision: str  # of training's products and of its evaluations (bf16: under autocast)
    train: TrainStats
    data: dict = field(default_factory=dict)  # the packed data's fingerprint and per-split counts
    versions: dict = field(default_factory=dict)  # of the toolkit and the libraries
    kept: Kept | None = None  # None: the last step's (what metrics.json written before `keep` existed means)
    quantization: str = "none"  # of the base's weights: "none", "int8", "nf4" or "fp4"

    @property
    def ran(self) -> str:
        """What ran, in words: "bf16", or "nf4 base, bf16" (a quantized base computing in that precision)."""
        return self.precision if self.quantization == "none" else f"{self.quantization} base, {self.precision}"

    def to_json(self) -> dict:
        return {
            "base": self.base.to_json(),
            "adapted": self.adapted.to_json(),
            "protocol": self.protocol.to_json(self.adapted.tokens),
            "precision": self.precision,
            "quantization": self.quantization,
            "train": self.train.to_json(),
            "kept": (self.kept or Kept("last", self.train.steps)).to_json(),
            "data": self.data,
            "versions": self.versions,
        }

    @classmethod
    def from_json(cls, data) -> TrainingMetrics:
        data = _require_object(data, "metrics.json")
        try:
            return cls(
                base=Score.from_json(data["base"]),
                adapted=Score.from_json(data["adapted"]),
                protocol=Protocol.from_json(data["protocol"]),
                precision=str(data.get("precision", "fp32")),
                train=TrainStats.from_json(data["train"]),
                data=data.get("data", {}),
                versions=data.get("versions", {}),
                kept=Kept.from_json(data["kept"]) if "kept" in data else None,
                quantization=str(data.get("quantization", "none")),
            )
        except KeyError as err:
            raise RecordError(f"metrics.json has no {err.args[0]!r}") from None
        except (TypeError, ValueError) as err:
            raise RecordError(f"metrics.json is not what training writes ({err})") from None


# ---------------------------------------------------------------- what evaluation reports


@dataclass(frozen=True)
class TaskScore(JsonRecord):
    """An lm-evaluation-harness task's figures, named as the harness names them ("acc", "word_perplexity";
    a metric under a filter other than "none" is "metric,filter")."""

    described_as = "a task score"

    metrics: dict[str, float]  # name -> value, in the harness's order: the first is the task's headline
    stderr: dict[str, float] = field(default_factory=dict)  # name -> standard error, where the harness gives one
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    version: str | None = None  # of the task's definition

    @property
    def headline(self) -> tuple[str, float | None]:
        """The first metric: the one a matrix shows ("", None when the harness reported no number)."""
        name = next(iter(self.metrics), "")
        return name, self.metrics.get(name)


@dataclass(frozen=True)
class EvalResult:
    """One row of `gpt2-adapt eval`: a model (a plain model, a base, an adapter) on a text, or on an
    lm-evaluation-harness task."""

    model: str  # the model, or the base the adapter was loaded on
    adapter: str | None  # None: the base or a plain model
    dataset: str  # the text's label, or the task's name
    protocol: Protocol | None  # None for a task: the harness's own
    score: Score | None  # a text's; None for a task
    documents: int  # documents scored
    precision: str
    seconds: float  # of scoring, loading left out
    tokens_per_second: float | None  # None for a task
    task: TaskScore | None = None  # a task's figures

    @property
    def headline(self) -> tuple[str, float | None]:
        """The figure a matrix shows: a text's perplexity, a task's first metric."""
        return self.task.headline if self.task else ("perplexity", self.score.perplexity)

    def to_json(self) -> dict:
        """A text's row: the protocol and every Score field. A task's: the Score fields the harness also
        reports under those names (perplexity, word_perplexity, ...; the rest null), and all of its figures
        under "task"."""
        if self.task:
            score = {f.name: self.task.metrics.get(f.name) for f in dataclasses.fields(Score)}
        else:
            score = dataclasses.asdict(self.score)
        return {
            "model": self.model,
            "adapter": self.adapter,
            "dataset": self.dataset,
            "protocol": self.protocol.to_json(self.score.tokens) if self.protocol else None,
            **score,
            "documents": self.documents,
            "precision": self.precision,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "task": self.task.to_json() if self.task else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> EvalResult:
        data = _require_object(data, "an evaluation result")
        task = TaskScore.from_json(data["task"]) if data.get("task") else None
        score = None if task else Score(**{f.name: data.get(f.name) for f in dataclasses.fields(Score)})
        return cls(
            model=data["model"],
            adapter=data.get("adapter"),
            dataset=data["dataset"],
            protocol=Protocol.from_json(data["protocol"]) if data.get("protocol") else None,
            score=score,
            documents=data.get("documents", 0),
            precision=data.get("precision", "fp32"),
            seconds=data.get("seconds", 0.0),
            tokens_per_second=data.get("tokens_per_second"),
            task=task,
        )
