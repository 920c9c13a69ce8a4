"""Training: check the store, prepare data and model, run the Trainer, and save the adapter.

Reads top to bottom: `train()` is the whole path from a recipe to an adapter in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import __version__, data, model_card, plots, provenance, sources
from .cache import read_json
from .errors import ToolkitError
from .model import attach_lora, describe_adapter, load_base, load_config, load_tokenizer, resolve_precision
from .perplexity import perplexity
from .recipe import Recipe
from .store import AdapterStore

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # in the checkpoints folder: the recipe it belongs to and the base perplexity
PROGRESS = "toolkit_progress.json"  # in each checkpoint: training seconds so far


@dataclass(frozen=True)
class TrainResult:
    name: str
    path: Path
    metrics: dict
    trained: bool  # False when --resume found the run already finished


def train(recipe: Recipe, store: AdapterStore, resume: bool = False, overwrite: bool = False) -> TrainResult:
    name = recipe.adapter_name
    target, checkpoints = store.path(name), store.checkpoints(name)
    store.check_unlocked(name)
    checkpoint = _check_store(recipe, store, resume, overwrite)
    if resume and checkpoint is None and store.exists(name):
        log.info("%s: the run had finished; nothing to do", name)
        return TrainResult(name, target, read_json(target / "metrics.json"), trained=False)

    # Everything that can fail on bad input happens before anything is written to the store.
    precision = resolve_precision(recipe.training.precision)
    load_config(recipe)
    tokenizer = load_tokenizer(recipe)
    packed = data.prepare_data(recipe.data, tokenizer)
    log.info(
        "data: %d training blocks and %d evaluation blocks of %d tokens",
        len(packed.train), len(packed.eval), recipe.data.block_size,
    )
    set_seed(recipe.training.seed)  # before the adapter is built: LoRA A is drawn from the global RNG
    model = attach_lora(load_base(recipe), recipe)
    _report_adapter(describe_adapter(model))

    # One process per adapter name: a second run of the same name fails here instead of interleaving.
    with store.lock(name) if _is_main_process() else contextlib.nullcontext():
        return _run(recipe, store, checkpoint, model, tokenizer, packed, precision)


def _run(recipe, store, checkpoint, model, tokenizer, packed, precision) -> TrainResult:
    """Train (or resume) and save: the part of `train` that writes to the store."""
    name = recipe.adapter_name
    checkpoints = store.checkpoints(name)
    if checkpoint is None and checkpoints.exists():  # a fresh start must never pick up an older run's state
        shutil.rmtree(checkpoints)
    clock = TrainClock(read_json(checkpoint / PROGRESS).get("seconds", 0.0) if checkpoint else 0.0)
    trainer = AdapterTrainer(
        clock=clock,
        model=model,
        args=_training_arguments(recipe, checkpoints, precision),
        train_dataset=packed.train,
        eval_dataset=packed.eval,
        data_collator=default_data_collator,
        callbacks=[clock],
    )
    # The Trainer prints raw metric dicts; keep its progress bar (when not -q) and print readable lines.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if log.isEnabledFor(logging.INFO):
        trainer.add_callback(ProgressLines())
    record = read_json(checkpoints / RUN_RECORD) if checkpoint else {}
    if "base" not in record:
        record = {"recipe": recipe.fingerprint(), "base": _public(trainer.evaluate(metric_key_prefix="base"))}
        if trainer.is_world_process_zero():
            (checkpoints / RUN_RECORD).write_text(json.dumps(record, indent=2))
    log.info("base perplexity: %.3f over %d tokens", record["base"]["perplexity"], record["base"]["tokens"])

    if checkpoint is not None and _finished(checkpoint):
        # The Trainer would train one more step; the weights are all there, so load them instead.
        _load_checkpoint_weights(model, checkpoint)
        trainer.state = trainer.state.load_from_json(str(checkpoint / "trainer_state.json"))
    else:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    adapted = trainer.final_evaluation()

    state = trainer.state
    seconds = clock.seconds()
    metrics = {
        "base": record["base"],
        "adapted": _public(adapted),
        "protocol": {"kind": "disjoint", "context": recipe.data.block_size, "stride": recipe.data.block_size},
        "train": {
            "steps": state.global_step,
            "epochs": state.epoch,
            "tokens": int(state.num_input_tokens_seen),
            "seconds": seconds,
            "tokens_per_second": state.num_input_tokens_seen / seconds if seconds > 0 else 0.0,
        },
        "data": {"fingerprint": packed.fingerprint, **packed.stats},
        "versions": _versions(),
    }
    if trainer.is_world_process_zero():
        _save_adapter(store, recipe, model, tokenizer, metrics, state.log_history)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(name, store.path(name), metrics, trained=True)


def _save_adapter(store: AdapterStore, recipe: Recipe, model, tokenizer, metrics: dict, log_history: list) -> None:
    """Write the adapter folder atomically: weights, recipe, metrics, card, curves, then the manifest
    that records every file's sha256 and the base and data it was trained on."""
    source = sources.model_source(recipe.model.name, recipe.model.revision)
    with store.saving(recipe.adapter_name) as folder:
        model.save_pretrained(folder)
        (folder / "recipe.toml").write_text(recipe.to_toml(), encoding="utf-8")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        (folder / "README.md").write_text(model_card.render(recipe, metrics), encoding="utf-8")
        plots.training_curves(log_history, metrics["base"]["perplexity"], folder / "training.png")
        provenance.write_manifest(
            folder,
            name=recipe.adapter_name,
            base={
                "name": _recorded_path(recipe.model.name),
                "revision": recipe.model.revision,
                "weights_sha256": provenance.weights_fingerprint(source),
                "tokenizer_sha256": provenance.tokenizer_fingerprint(tokenizer),
            },
            dataset=_dataset_record(recipe, metrics["data"]["fingerprint"]),
            recipe_sha256=recipe.fingerprint(),
            versions=metrics["versions"],
        )


def _recorded_path(name: str) -> str:
    """A local folder is recorded as an absolute path, so that the adapter loads from anywhere."""
    return str(Path(name).expanduser().resolve()) if Path(name).expanduser().is_dir() else name


def _dataset_record(recipe: Recipe, fingerprint: str) -> dict:
    d = recipe.data
    if d.train_files:
        files = {
            "train_files": [str(p.resolve()) for p in data.expand_files(d.train_files, "data.train_files")],
            "eval_files": [str(p.resolve()) for p in data.expand_files(d.eval_files, "data.eval_files")] if d.eval_files else [],
        }
        return {**files, "text_column": d.text_column, "fingerprint": fingerprint}
    return {
        "dataset": _recorded_path(d.dataset),
        "config": d.config,
        "train_split": d.train_split,
        "eval_split": d.eval_split,
        "text_column": d.text_column,
        "fingerprint": fingerprint,
    }


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _check_store(recipe: Recipe, store: AdapterStore, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to clobber an adapter or a run, and find the checkpoint to resume from (None: start fresh)."""
    name = recipe.adapter_name
    if resume and overwrite:
        raise ToolkitError("--resume and --overwrite: choose one (continue the run, or start it over)")
    checkpoints = store.checkpoints(name)
    if not resume and not overwrite:
        if store.exists(name):
            raise ToolkitError(
                f"adapter {name!r} already exists in {store.root}; pass --overwrite to retrain it, "
                "or set output.name to another name"
            )
        if latest_checkpoint(checkpoints) is not None:
            raise ToolkitError(
                f"an unfinished run of {name!r} left checkpoints in {checkpoints}; "
                "pass --resume to continue it or --overwrite to start over"
            )
    if not resume:
        return None
    checkpoint = latest_checkpoint(checkpoints)
    if checkpoint is None:
        if not store.exists(name):
            log.info("%s: no checkpoint to resume from; starting fresh", name)
        return None
    record = read_json(checkpoints / RUN_RECORD)
    if record.get("recipe") not in (None, recipe.fingerprint()):
        raise ToolkitError(
            f"the recipe of {name!r} changed since its checkpoints were written; "
            "restore it, or pass --overwrite to start over"
        )
    if store.exists(name):
        done = read_json(store.path(name) / "metrics.json").get("train", {}).get("steps", -1)
        if done >= read_json(checkpoint / "trainer_state.json").get("global_step", 0):
            return None  # the adapter already holds the newest checkpoint's training: finished
    return checkpoint


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint with its state and weights written; a half-written one is skipped."""
    if not folder.is_dir():
        return None
    complete = [
        p
        for p in folder.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit()
        and (p / "trainer_state.json").is_file()
        and (p / "adapter_model.safetensors").is_file()
    ]
    for p in sorted(folder.glob("checkpoint-*")):
        if p not in complete:
            log.warning("skipping incomplete checkpoint %s", p)
    return max(complete, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


def _finished(checkpoint: Path) -> bool:
    state = read_json(checkpoint / "trainer_state.json")
    return state.get("global_step", 0) >= state.get("max_steps", math.inf)


def _load_checkpoint_weights(model, checkpoint: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))


def _training_arguments(recipe: Recipe, output_dir: Path, precision: str) -> TrainingArguments:
    t = recipe.training
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        eval_strategy="steps" if t.eval_every else "no",
        eval_steps=t.eval_every or None,
        save_strategy="steps",
        save_steps=t.save_every,
        save_total_limit=t.keep_checkpoints,
        logging_steps=t.log_every,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not torch.cuda.is_available(),  # without it the Trainer refuses bf16 on a CPU
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        report_to=t.report_to or "none",
        remove_unused_columns=False,  # the blocks carry exactly what the model takes
        include_num_input_tokens_seen="all",  # packed blocks have no padding: every token counts
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


class TrainClock(TrainerCallback):
    """Training seconds across resumes, not counting evaluation; saved into every checkpoint."""

    def __init__(self, seconds_before: float = 0.0):
        self.before = seconds_before
        self.started: float | None = None
        self.paused = 0.0

    def seconds(self) -> float:
        if self.started is None:
            return self.before
        return self.before + time.perf_counter() - self.started - self.paused

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            (folder / PROGRESS).write_text(json.dumps({"seconds": self.seconds()}))


class ProgressLines(ProgressCallback):
    """The Trainer's progress bar, with log lines a person reads: step, loss, learning rate, perplexity."""

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        pass  # the evaluation is the toolkit's own loop; its result is one line

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        step = f"step {state.global_step}/{state.max_steps}"
        if "loss" in logs:
            line = f"{step}  loss {logs['loss']:.4f}  lr {logs.get('learning_rate', 0):.2e}"
        elif "eval_perplexity" in logs:
            line = f"{step}  eval perplexity {logs['eval_perplexity']:.3f}"
        else:
            return
        if self.training_bar is not None:
            self.training_bar.write(line)
        else:
            log.info(line)


class AdapterTrainer(Trainer):
    """The Trainer with its evaluation replaced by the toolkit's token-weighted perplexity."""

    def __init__(self, clock: TrainClock, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock
        self.last_evaluation: tuple[int, dict] | None = None

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        started = time.perf_counter()
        result = perplexity(
            self.model,
            self.get_eval_dataloader(eval_dataset),
            device=self.args.device if not getattr(self.model, "hf_device_map", None) else None,
            gather=self.accelerator.gather_for_metrics,
            autocast=self.autocast_smart_context_manager,
        )
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in result.items()}
        self.log(dict(metrics))  # log() adds epoch and token counts to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if self.clock.started is not None:
            self.clock.paused += time.perf_counter() - started
        self.last_evaluation = (self.state.global_step, metrics)
        return metrics

    def final_evaluation(self) -> dict:
        """The evaluation at the last step: the Trainer's own when it ran one there, else a new one."""
        if self.last_evaluation and self.last_evaluation[0] == self.state.global_step:
            return self.last_evaluation[1]
        return self.evaluate()


def _public(metrics: dict) -> dict:
    """{"eval_perplexity": ...} -> {"perplexity": ...}"""
    return {key.split("_", 1)[1]: value for key, value in metrics.items()}


def _report_adapter(summary: dict) -> None:
    layers = ", ".join(f"{pattern} x{count}" for pattern, count in summary["layers"].items())
    log.info("LoRA on %d layers: %s", summary["matched"], layers)
    log.info(
        "trainable parameters: %s of %s (%.3f%%)",
        f"{summary['trainable']:,}", f"{summary['total']:,}", 100 * summary["share"],
    )


def _versions() -> dict:
    import peft
    import transformers

    return {"toolkit": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}

