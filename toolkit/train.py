"""Training: check the store, prepare data and model, run the Trainer, and save the adapter.

Reads top to bottom: `train()` is the whole path from a recipe to an adapter in the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import Trainer, TrainingArguments, default_data_collator, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from . import __version__, checkpoints, data, head_loss, model_card, plots, provenance, safety, sources
from .cache import read_json
from .checkpoints import CheckpointKeeper
from .errors import ToolkitError
from .model import (
    attach_lora, describe_adapter, load_base, load_config, load_tokenizer, resolve_precision, scoring_attention,
)
from .perplexity import perplexity
from .recipe import Recipe
from .store import AdapterStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    name: str
    path: Path
    metrics: dict
    trained: bool  # False when --resume found the run already finished


def train(
    recipe: Recipe, store: AdapterStore, resume: bool = False, overwrite: bool = False, force: bool = False,
    callbacks: tuple = (),
) -> TrainResult:
    """Train the recipe's adapter into the store. `resume` continues from the newest complete
    checkpoint; `overwrite` replaces an existing adapter; `force` resumes even if the recipe, the data or
    the base changed since the checkpoint. `callbacks` are more Trainer callbacks (the benchmark's timer)."""
    name = recipe.adapter_name
    store.check_unlocked(name)
    checkpoint = _check_store(recipe, store, resume, overwrite)
    if resume and checkpoint is None and store.exists(name):
        log.info("%s: the run had finished; nothing to do", name)
        return TrainResult(name, store.path(name), read_json(store.path(name) / "metrics.json"), trained=False)

    # Everything that can fail on bad input happens before anything is written to the store.
    precision = resolve_precision(recipe.training.precision)
    load_config(recipe)
    tokenizer = load_tokenizer(recipe)
    with PartialState().main_process_first():  # under torchrun: rank 0 packs, the others read its cache
        packed = data.prepare_data(recipe.data, tokenizer)
    log.info(
        "data: %d training blocks and %d evaluation blocks of %d tokens",
        len(packed.train), len(packed.eval), recipe.data.block_size,
    )
    identity = {
        "recipe": recipe.fingerprint(),
        "data": packed.fingerprint,
        "base": provenance.weights_fingerprint(sources.model_source(recipe.model.name, recipe.model.revision)),
    }
    if checkpoint is not None:
        _check_same_run(store, name, identity, force)
    set_seed(recipe.training.seed)  # before the adapter is built: LoRA A is drawn from the global RNG
    model = attach_lora(load_base(recipe), recipe)
    summary = describe_adapter(model)
    _report_adapter(summary)
    safety.check_free_space(store.root, summary["trainable"], recipe.training.keep_checkpoints)

    # One process per adapter name: a second run of the same name fails here instead of interleaving.
    with store.lock(name) if _is_main_process() else contextlib.nullcontext(), _process_group():
        try:
            return _run(recipe, store, checkpoint, identity, model, tokenizer, packed, precision, callbacks)
        except (OSError, RuntimeError) as err:
            if not safety.is_disk_full(err, store.root):
                raise
            latest = checkpoints.latest_checkpoint(store.checkpoints(name), report=False)
            raise ToolkitError(
                f"the disk filled up while writing in {store.root}; incomplete files are ignored, the last "
                f"complete checkpoint is {latest or 'none'}; free some space and run again with --resume"
            ) from None


def _run(recipe, store, checkpoint, identity, model, tokenizer, packed, precision, callbacks=()) -> TrainResult:
    """Train (or resume) and save: the part of `train` that writes to the store."""
    name = recipe.adapter_name
    run_folder = store.checkpoints(name)
    if checkpoint is None and run_folder.exists():  # a fresh start must never pick up an older run's state
        shutil.rmtree(run_folder)
    keeper = CheckpointKeeper(recipe.training.keep_checkpoints, checkpoints.training_seconds(checkpoint))
    trainer = AdapterTrainer(
        keeper=keeper,
        model=model,
        args=_training_arguments(recipe, run_folder, precision),
        train_dataset=packed.train,
        eval_dataset=packed.eval,
        data_collator=default_data_collator,
        callbacks=[keeper, *callbacks],
    )
    # The Trainer prints raw metric dicts; keep its progress bar (when not -q) and print readable lines.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if log.isEnabledFor(logging.INFO):
        trainer.add_callback(ProgressLines(bar=sys.stderr.isatty()))

    record = checkpoints.read_run_record(run_folder) if checkpoint else {}
    if "base_perplexity" not in record:
        record = {**identity, "base_perplexity": _public(trainer.evaluate(metric_key_prefix="base"))}
        if trainer.is_world_process_zero():
            checkpoints.write_run_record(run_folder, record)
    base = record["base_perplexity"]
    log.info("base perplexity: %.3f over %d tokens", base["perplexity"], base["tokens"])

    if checkpoint is not None and checkpoints.is_finished(checkpoint):
        # The Trainer would train one more step; the weights are all there, so load them instead.
        checkpoints.load_weights(model, checkpoint)
        trainer.state = trainer.state.load_from_json(str(checkpoint / "trainer_state.json"))
    else:
        stop = safety.StopOnInterrupt()
        trainer.add_callback(stop)
        with stop:
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        if stop.requested:
            saved = checkpoints.latest_checkpoint(run_folder, report=False)
            raise safety.Interrupted(
                f"stopped at step {trainer.state.global_step}; checkpoint saved in {saved}. "
                "Continue with the same command and --resume"
            )
    adapted = trainer.final_evaluation()

    state = trainer.state
    seconds = keeper.seconds()
    metrics = {
        "base": base,
        "adapted": _public(adapted),
        "protocol": {"kind": "disjoint", "context": recipe.data.block_size, "stride": recipe.data.block_size},
        "precision": precision,  # of training and of its evaluations (bf16: under autocast)
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
        _save_adapter(store, recipe, model, tokenizer, identity, metrics, state.log_history)
    trainer.accelerator.wait_for_everyone()
    return TrainResult(name, store.path(name), metrics, trained=True)


def _save_adapter(store, recipe: Recipe, model, tokenizer, identity: dict, metrics: dict, log_history: list) -> None:
    """Write the adapter folder atomically: weights, recipe, metrics, card, curves, then the manifest
    that records every file's sha256 and the base and data it was trained on."""
    with store.saving(recipe.adapter_name) as folder:
        model.save_pretrained(folder)
        (folder / "recipe.toml").write_text(recipe.to_toml(), encoding="utf-8")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        # Every logged step (loss, learning rate, evaluations) of the whole run, resumes included.
        lines = "".join(json.dumps(entry) + "\n" for entry in log_history)
        (folder / "metrics.jsonl").write_text(lines, encoding="utf-8")
        (folder / "README.md").write_text(model_card.render(recipe, metrics), encoding="utf-8")
        plots.training_curves(log_history, metrics["base"]["perplexity"], folder / "training.png")
        provenance.write_manifest(
            folder,
            name=recipe.adapter_name,
            base={
                "name": _recorded_path(recipe.model.name),
                "revision": recipe.model.revision,
                "weights_sha256": identity["base"],
                "tokenizer_sha256": provenance.tokenizer_fingerprint(tokenizer),
            },
            dataset=_dataset_record(recipe, metrics["data"]["fingerprint"]),
            recipe_sha256=identity["recipe"],
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


@contextlib.contextmanager
def _process_group():
    """Under torchrun, tear the process group down when training ends, so that every rank exits cleanly
    (without it, an exit at interpreter shutdown crashed one run in nine)."""
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _check_store(recipe: Recipe, store: AdapterStore, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to clobber an adapter or a run, and find the checkpoint to resume from (None: start fresh)."""
    name = recipe.adapter_name
    if resume and overwrite:
        raise ToolkitError("--resume and --overwrite: choose one (continue the run, or start it over)")
    run_folder = store.checkpoints(name)
    if not resume and not overwrite:
        if store.exists(name):
            raise ToolkitError(
                f"adapter {name!r} already exists in {store.root}; pass --overwrite to retrain it, "
                "or set output.name to another name"
            )
        if checkpoints.latest_checkpoint(run_folder, report=False) is not None:
            raise ToolkitError(
                f"an unfinished run of {name!r} left checkpoints in {run_folder}; "
                "pass --resume to continue it or --overwrite to start over"
            )
    if not resume:
        return None
    checkpoint = checkpoints.latest_checkpoint(run_folder)
    if checkpoint is None:
        if not store.exists(name):
            log.info("%s: no complete checkpoint to resume from; starting fresh", name)
        return None
    if store.exists(name):
        done = read_json(store.path(name) / "metrics.json").get("train", {}).get("steps", -1)
        if done >= checkpoints.checkpoint_step(checkpoint):
            return None  # the adapter already holds the newest checkpoint's training: finished
    checkpoints.check_resumable(checkpoint)
    return checkpoint


def _check_same_run(store: AdapterStore, name: str, identity: dict, force: bool) -> None:
    """Resuming is only exact on the same recipe, data and base; say what changed, or go on if forced."""
    record = checkpoints.read_run_record(store.checkpoints(name))
    changed = [what for what in ("recipe", "data", "base") if record.get(what) not in (None, identity[what])]
    if not changed:
        return
    what = {"recipe": "the recipe", "data": "the training data", "base": "the base model's weights"}
    message = f"{' and '.join(what[c] for c in changed)} changed since the checkpoints of {name!r} were written"
    if not force:
        raise ToolkitError(f"{message}; restore them, pass --force to resume anyway, or --overwrite to start over")
    log.warning("%s; resuming anyway (--force)", message)


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
        save_total_limit=None,  # retention is the CheckpointKeeper's: it never deletes the only complete one
        logging_steps=t.log_every,
        seed=t.seed,
        data_seed=t.seed,
        use_cpu=not torch.cuda.is_available(),  # without it the Trainer refuses bf16 on a CPU
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        report_to=t.report_to or "none",
        fsdp=t.fsdp or None,  # passed through: the Trainer and accelerate implement both
        deepspeed=t.deepspeed or None,
        remove_unused_columns=False,  # the blocks carry exactly what the model takes
        include_num_input_tokens_seen="all",  # packed blocks have no padding: every token counts
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


class ProgressLines(ProgressCallback):
    """The Trainer's progress bar on a terminal, with log lines a person reads: step, loss, learning
    rate, perplexity. Off a terminal (a log file, CI) only the lines: a bar redrawn with carriage
    returns is unreadable there."""

    def __init__(self, bar: bool):
        super().__init__()
        self.bar = bar

    def on_train_begin(self, args, state, control, **kwargs):
        if self.bar:
            super().on_train_begin(args, state, control, **kwargs)

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)

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
    """The Trainer with its evaluation replaced by the toolkit's token-weighted perplexity, and its loss
    computed by `head_loss` (no full-vocabulary logits) wherever the output layer is whole on every process."""

    def __init__(self, keeper: CheckpointKeeper, **kwargs):
        self.fused_head = head_loss.applies(kwargs["args"])
        if self.fused_head:
            kwargs["compute_loss_func"] = self._head_loss
        super().__init__(**kwargs)
        self.keeper = keeper
        self.last_evaluation: tuple[int, dict] | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.fused_head:
            # Only the last position's logits (the model insists on some) and the final hidden states.
            inputs = {**inputs, "output_hidden_states": True, "logits_to_keep": 1}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _head_loss(self, outputs, labels, num_items_in_batch=None):
        """The mean NLL over the scored tokens of the whole (accumulated, all-process) batch, as the model's
        own loss with num_items_in_batch; the Trainer then scales it as it scales that one."""
        head = self.accelerator.unwrap_model(self.model).get_output_embeddings()
        # accelerate's autocast wraps the model's forward only; the output layer belongs under it too.
        with self.accelerator.autocast():
            total = head_loss.summed_nll(outputs.hidden_states[-1], head.weight, labels)
        count = num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != head_loss.IGNORE_INDEX).sum()
        return total / count

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        safety.check_loss(loss, self.state.global_step + 1, Path(self.args.output_dir))
        return loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        started = time.perf_counter()
        with scoring_attention(self.model):
            result = perplexity(
                self.model,
                self.get_eval_dataloader(eval_dataset),
                device=self.args.device if not getattr(self.model, "hf_device_map", None) else None,
                gather=self.accelerator.gather_for_metrics,
                autocast=self.accelerator.autocast,  # the training precision, before and after prepare()
            )
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in result.items()}
        self.log(dict(metrics))  # log() adds epoch and token counts to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if self.keeper.started is not None:
            self.keeper.paused += time.perf_counter() - started
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

