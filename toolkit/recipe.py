"""Recipes: TOML files read into frozen dataclasses, with `--set` overrides and every error reported at once.

Each field's default lives here and nowhere else; its `help` metadata is the one-line meaning that
`recipe show` and the README reference repeat.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from .errors import ToolkitError

TARGET_PRESETS = {
    "attn": ["c_attn"],
    "attn+proj": ["attn.c_attn", "attn.c_proj"],
    "all": ["c_attn", "c_proj", "c_fc"],
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZATION_MODES = ("none", "int8")
SCHEDULERS = ("linear", "cosine", "constant_with_warmup")
# Store names are also peft adapter names, which become module keys: those cannot hold a '.'.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")


def _key(default, help: str):
    """A recipe key: its default and a one-line meaning."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ModelSpec:
    name: str = _key("gpt2", "hub id, local folder (save_pretrained output) or builtin:tiny-gpt2")
    revision: str = _key("main", "hub branch, tag or commit (ignored for local folders)")


@dataclass(frozen=True)
class DataSpec:
    dataset: str = _key("", "hub id, local folder (save_to_disk output) or builtin:python-docs")
    config: str = _key("", "the dataset's configuration name, e.g. wikitext-103-raw-v1")
    train_files: list[str] = _key([], "instead of dataset: local txt/json/jsonl/csv/parquet files or globs")
    eval_files: list[str] = _key([], "evaluation files for train_files; none: carve eval_fraction out of train")
    train_split: str = _key("train", "the dataset split to train on")
    eval_split: str = _key(
        "validation", 'split to evaluate on; "" (or the default split missing): carve eval_fraction out of train'
    )
    eval_fraction: float = _key(0.05, "share of training documents held out when there is no evaluation split")
    text_column: str = _key("text", "the column holding the text")
    block_size: int = _key(1024, "tokens per packed training block (at most the model's context)")


@dataclass(frozen=True)
class LoraSpec:
    r: int = _key(16, "rank of the LoRA update")
    alpha: float = _key(32.0, "LoRA scaling numerator: the update is scaled by alpha / r")
    dropout: float = _key(0.05, "dropout on the LoRA input during training")
    targets: str | list[str] = _key(
        "attn", '"attn" (c_attn), "attn+proj" (c_attn and attn.c_proj), "all" (c_attn, c_proj, c_fc) or module names'
    )


@dataclass(frozen=True)
class QuantizationSpec:
    mode: str = _key("none", '"none" (base in full precision) or "int8" (bitsandbytes 8-bit base weights)')


@dataclass(frozen=True)
class TrainingSpec:
    epochs: float = _key(1.0, "passes over the training blocks")
    max_steps: int = _key(-1, "optimizer steps; > 0 overrides epochs")
    batch_size: int = _key(8, "blocks per device per forward pass")
    eval_batch_size: int = _key(0, "blocks per device per evaluation pass; 0: same as batch_size")
    grad_accum: int = _key(1, "forward passes per optimizer step")
    learning_rate: float = _key(2e-4, "peak learning rate (AdamW)")
    scheduler: str = _key("linear", '"linear", "cosine" or "constant_with_warmup" decay after warm-up')
    warmup_ratio: float = _key(0.03, "share of the steps spent warming the learning rate up from 0")
    weight_decay: float = _key(0.0, "AdamW weight decay on the LoRA weights")
    max_grad_norm: float = _key(1.0, "gradient clipping norm; 0 disables clipping")
    eval_every: int = _key(500, "steps between evaluations (also run at the end); 0: only at the end")
    save_every: int = _key(500, "steps between checkpoints")
    keep_checkpoints: int = _key(2, "checkpoints kept; older ones are deleted")
    log_every: int = _key(10, "steps between loss log lines")
    seed: int = _key(42, "seed for LoRA initialisation, dropout and data order")
    precision: str = _key(
        "auto", '"auto" (bf16/fp16 on CUDA, bf16 on CPUs with native bf16, else fp32), "fp32", "bf16" or "fp16"'
    )
    base_dropout: bool = _key(
        True, "keep the base's own dropout (GPT-2: 0.1) while training; false: none, about 1.4x faster on CPU"
    )
    gradient_checkpointing: bool = _key(False, "recompute activations in the backward pass to save memory")
    report_to: list[str] = _key([], 'Trainer loggers such as "tensorboard"; empty: none')
    fsdp: str = _key("", 'FSDP options passed to the Trainer, e.g. "full_shard auto_wrap"; empty: DDP')
    deepspeed: str = _key("", "path of a DeepSpeed config JSON passed to the Trainer; empty: none")


@dataclass(frozen=True)
class OutputSpec:
    name: str = _key("", "the adapter's name in the store; empty: a slug of the dataset")


@dataclass(frozen=True)
class Recipe:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    quantization: QuantizationSpec = field(default_factory=QuantizationSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    @property
    def adapter_name(self) -> str:
        return self.output.name or default_adapter_name(self.data)

    @property
    def target_modules(self) -> list[str]:
        targets = self.lora.targets
        return list(TARGET_PRESETS[targets]) if isinstance(targets, str) else list(targets)

    def to_dict(self) -> dict:
        resolved = dataclasses.asdict(self)
        resolved["output"]["name"] = self.adapter_name
        return resolved

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def fingerprint(self) -> str:
        """sha256 of the resolved recipe: two runs with the same fingerprint train the same adapter."""
        return hashlib.sha256(self.to_toml().encode()).hexdigest()


SECTIONS = {f.name: f.type for f in dataclasses.fields(Recipe)}


def section_classes() -> dict[str, type]:
    hints = typing.get_type_hints(Recipe)
    return {name: hints[name] for name in SECTIONS}


def default_adapter_name(data: DataSpec) -> str:
    """A store name derived from the data: 'wikitext-103-raw-v1' for Salesforce/wikitext, 'notes' for notes/*.txt."""
    if data.dataset:
        source = data.config or data.dataset.rstrip("/").split("/")[-1].split(":")[-1]
    elif data.train_files:
        source = Path(data.train_files[0]).stem.replace("*", "") or Path(data.train_files[0]).parent.name
    else:
        source = "adapter"
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", source).strip("-_").lower()
    return slug[:64] or "adapter"


# ---------------------------------------------------------------- reading and checking


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a recipe file, apply `key.path=value` overrides, and return it validated.

    Raises ToolkitError listing every problem, each prefixed with the file and the dotted key.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such recipe file; pass the path of a .toml recipe (see recipes/)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ToolkitError(f"{path}: not valid TOML: {err}; fix the syntax there") from None
    except UnicodeDecodeError:
        raise ToolkitError(f"{path}: not a UTF-8 text file; save the recipe as UTF-8 text") from None
    problems: list[str] = []
    for item in overrides:
        problems += _apply_override(raw, item)
    recipe, more, failed = _build(raw)
    problems += more
    for problem in _check_values(recipe) + _check_machine(recipe):  # keys already reported stand at defaults
        if not any(re.search(rf"\b{re.escape(key)}\b", problem) for key in failed):
            problems.append(problem)
    if problems:
        raise ToolkitError(*(f"{path}: {p}" for p in problems))
    return recipe


def _apply_override(raw: dict, item: str) -> list[str]:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not all(parts):
        return [f"--set {item!r}: expected section.key=value, e.g. lora.r=8"]
    try:  # a TOML value (8, 2e-4, true, ["a", "b"], "quoted"); anything else is a bare string
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    section = raw.setdefault(parts[0], {})
    if not isinstance(section, dict):
        return [f"{parts[0]}: must be a table ([{parts[0]}])"]
    section[parts[1]] = value
    return []


def _build(raw: dict) -> tuple[Recipe, list[str], set[str]]:
    """The recipe from every well-typed value (the rest at defaults), the problems, and the keys that failed."""
    problems: list[str] = []
    failed: set[str] = set()
    sections = {}
    classes = section_classes()
    for name, value in raw.items():
        if name not in classes:
            problems.append(f"{name}: unknown section{_closest(name, classes)}")
        elif not isinstance(value, dict):
            problems.append(f"{name}: must be a table ([{name}])")
            failed.add(name)
    for name, cls in classes.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            continue
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in table.items():
            if key not in hints:
                problems.append(f"{name}.{key}: unknown key{_closest(key, hints)}")
                continue
            error = _type_error(value, hints[key])
            if not error and isinstance(value, float) and not math.isfinite(value):
                error = f"must be a finite number (got {value})"
            if error:
                problems.append(f"{name}.{key}: {error}")
                failed.add(f"{name}.{key}")
            else:
                values[key] = float(value) if hints[key] is float else value
        sections[name] = cls(**values)
    return Recipe(**sections), problems, failed


def _closest(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid: {', '.join(options)})"


def _type_error(value, expected) -> str | None:
    def describe(t) -> str:
        if typing.get_origin(t) is list:
            return "a list of strings"
        return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}[t]

    options = typing.get_args(expected) if isinstance(expected, types.UnionType) else (expected,)
    for option in options:
        if typing.get_origin(option) is list:
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return None
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return None
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return None
        elif isinstance(value, option):
            return None
    wanted = " or ".join(describe(o) for o in options)
    return f"must be {wanted} (got {value!r})"


def _check_values(recipe: Recipe) -> list[str]:
    """Ranges and combinations that no type check catches."""
    m, d, lo, q, t, o = recipe.model, recipe.data, recipe.lora, recipe.quantization, recipe.training, recipe.output
    checks = [
        (not m.name.strip(), "model.name: must name a hub id, a local folder or builtin:tiny-gpt2"),
        (bool(d.dataset) and bool(d.train_files), "data.dataset and data.train_files: give one or the other, not both"),
        (not d.dataset and not d.train_files, "data.dataset: give a dataset or data.train_files"),
        (
            bool(d.eval_files) and not d.train_files,
            "data.eval_files: only with data.train_files (datasets have splits); remove it, or set data.eval_split",
        ),
        (bool(d.config) and bool(d.train_files), "data.config: only with data.dataset, not with data.train_files; remove it"),
        (not 0 < d.eval_fraction < 1, f"data.eval_fraction: must be between 0 and 1 (got {d.eval_fraction})"),
        (not d.text_column, "data.text_column: must not be empty"),
        (not d.train_split, "data.train_split: must not be empty"),
        (d.block_size < 2, f"data.block_size: must be at least 2 tokens (got {d.block_size})"),
        (lo.r < 1, f"lora.r: must be >= 1 (got {lo.r})"),
        (lo.alpha <= 0, f"lora.alpha: must be > 0 (got {lo.alpha})"),
        (not 0 <= lo.dropout < 1, f"lora.dropout: must be in [0, 1) (got {lo.dropout})"),
        (
            isinstance(lo.targets, str) and lo.targets not in TARGET_PRESETS,
            f"lora.targets: {lo.targets!r} is not a preset; use one of {', '.join(TARGET_PRESETS)} or a list of module names",
        ),
        (isinstance(lo.targets, list) and not lo.targets, "lora.targets: the list of module names is empty"),
        (q.mode not in QUANTIZATION_MODES, f"quantization.mode: must be one of {', '.join(QUANTIZATION_MODES)} (got {q.mode!r})"),
        (t.epochs <= 0, f"training.epochs: must be > 0 (got {t.epochs})"),
        (t.max_steps == 0 or t.max_steps < -1, f"training.max_steps: must be -1 (use epochs) or > 0 (got {t.max_steps})"),
        (t.batch_size < 1, f"training.batch_size: must be >= 1 (got {t.batch_size})"),
        (t.eval_batch_size < 0, f"training.eval_batch_size: must be >= 0 (got {t.eval_batch_size})"),
        (t.grad_accum < 1, f"training.grad_accum: must be >= 1 (got {t.grad_accum})"),
        (t.learning_rate <= 0, f"training.learning_rate: must be > 0 (got {t.learning_rate})"),
        (t.scheduler not in SCHEDULERS, f"training.scheduler: must be one of {', '.join(SCHEDULERS)} (got {t.scheduler!r})"),
        (not 0 <= t.warmup_ratio < 1, f"training.warmup_ratio: must be in [0, 1) (got {t.warmup_ratio})"),
        (t.weight_decay < 0, f"training.weight_decay: must be >= 0 (got {t.weight_decay})"),
        (t.max_grad_norm < 0, f"training.max_grad_norm: must be >= 0 (got {t.max_grad_norm})"),
        (t.eval_every < 0, f"training.eval_every: must be >= 0 (got {t.eval_every})"),
        (t.save_every < 1, f"training.save_every: must be >= 1 (got {t.save_every})"),
        (t.keep_checkpoints < 1, f"training.keep_checkpoints: must be >= 1 (got {t.keep_checkpoints})"),
        (t.log_every < 1, f"training.log_every: must be >= 1 (got {t.log_every})"),
        (t.seed < 0, f"training.seed: must be >= 0 (got {t.seed})"),
        (bool(t.fsdp) and bool(t.deepspeed), "training.fsdp and training.deepspeed: choose one"),
        (
            bool(t.deepspeed) and not Path(t.deepspeed).expanduser().is_file(),
            f"training.deepspeed: no such file {t.deepspeed!r}; point it at a DeepSpeed config JSON",
        ),
        (t.precision not in PRECISIONS, f"training.precision: must be one of {', '.join(PRECISIONS)} (got {t.precision!r})"),
        (
            bool(o.name) and not NAME_PATTERN.match(o.name),
            f"output.name: {o.name!r} is not a valid adapter name; use up to 64 letters, digits, '_' or '-',"
            " starting with a letter or digit",
        ),
    ]
    return [message for failed, message in checks if failed]


def _check_machine(recipe: Recipe) -> list[str]:
    """Combinations this machine cannot run: fp16 without CUDA, int8 without bitsandbytes."""
    import importlib.util

    import torch

    problems = []
    if recipe.training.precision == "fp16" and not torch.cuda.is_available():
        problems.append(
            'training.precision: fp16 needs a CUDA GPU and none is available; use "bf16" or "fp32" on CPU'
        )
    if recipe.quantization.mode == "int8" and importlib.util.find_spec("bitsandbytes") is None:
        problems.append('quantization.mode: "int8" needs bitsandbytes; pip install bitsandbytes, or use "none"')
    return problems
