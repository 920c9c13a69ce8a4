"""Training: check the store, prepare data and model, run the Trainer, and save the adapter.

Reads top to bottom: `train()` is the whole path from a recipe to an adapter in the store.

    result = toolkit.train(toolkit.load_recipe("recipes/quickstart.toml"), store="adapters")
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import default_data_collator, set_seed
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from .. import __version__
from ..config.recipe import Recipe
from ..data.packing import PreparedData, prepare_data
from ..distributed import group_closed_at_end, is_main_process, launched_world, rank_zero_first
from ..errors import ToolkitError, param
from ..files import read_json
from ..modeling.base import load_base, load_config
from ..modeling.fingerprints import tokenizer_fingerprint, weights_fingerprint
from ..modeling.lora import AdapterShape, attach_lora, describe_adapter
from ..modeling.precision import training_precision
from ..modeling.tokenizer import tokenizer_from
from ..records import Kept, Protocol, RunIdentity, Score, TrainingMetrics, TrainStats
from ..sources.models import model_source, recorded_name
from ..store import card
from ..store.manifest import MANIFEST, run_identity, write_manifest
from ..store.store import AdapterStore
from ..threads import set_threads
from . import checkpoints, guards, plots
from .best import BestAdapter, stopped_early, tracks
from .checkpoints import CheckpointKeeper, RunRecord
from .trainer import AdapterTrainer, FollowLoad, ProgressLines, training_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    name: str
    path: Path
    metrics: TrainingMetrics
    trained: bool  # False when resuming found the run already finished


def train(
    recipe: Recipe,
    store: AdapterStore | str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    allow_changed: bool = False,
    callbacks: tuple = (),
) -> TrainResult:
    """Train the recipe's adapter into the store. `resume` continues the run from its newest complete
    checkpoint; `overwrite` replaces an existing adapter (it stays in place until the new one is saved);
    `allow_changed` resumes even if the recipe, the data or the base changed since the checkpoint.
    `callbacks` are more Trainer callbacks (the benchmark's timer)."""
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    name = recipe.adapter_name
    _check_request(recipe, store, resume, overwrite)

    # Everything that can fail on bad input happens before anything is written to the store.
    precision = training_precision(recipe.training.precision)
    _check_loggers(recipe)
    load_config(recipe)
    source = model_source(recipe.model.name, recipe.model.revision)
    tokenizer = tokenizer_from(source, recipe.model.name)
    with rank_zero_first():  # under torchrun: rank 0 packs and hashes, the others read its caches
        packed = prepare_data(recipe.data, tokenizer)
        identity = RunIdentity(recipe.fingerprint(), packed.fingerprint, weights_fingerprint(source))
    _report_data(recipe, packed)
    _check_step_size(recipe, packed)
    resume_from = _resume_point(store, name, identity, resume, allow_changed)
    if resume_from == "finished":
        log.info("%s: the run had finished; nothing to do", name)
        return TrainResult(
            name,
            store.path(name),
            TrainingMetrics.from_json(read_json(store.path(name) / "metrics.json")),
            trained=False,
        )
    threads = set_threads("training", recipe.training.threads)
    if threads.from_load:
        callbacks = (*callbacks, FollowLoad(threads))
    set_seed(recipe.training.seed)  # before the adapter is built: LoRA A is drawn from the global RNG
    model = attach_lora(load_base(recipe), recipe)
    shape = describe_adapter(model)
    _report_adapter(shape)
    guards.check_free_space(store.root, shape.trainable, recipe.training.keep_checkpoints, store.setting)

    # One process per adapter name: a second run of the same name fails here instead of interleaving.
    with store.lock(name) if is_main_process() else contextlib.nullcontext(), group_closed_at_end():
        try:
            run = _Prepared(recipe, store, identity, model, tokenizer, packed, precision)
            return _run(run, resume_from, callbacks)
        except (OSError, RuntimeError) as err:
            if not guards.is_disk_full(err, store.root):
                raise
            latest = checkpoints.latest_checkpoint(store.checkpoints(name), report=False)
            raise ToolkitError(
                f"the disk filled up while writing in {store.root}; incomplete files are ignored, the last "
                f"complete checkpoint is {latest or 'none'}; free some space and train again with "
                f"{param('resume', True)}"
            ) from None


def _check_request(recipe: Recipe, store: AdapterStore, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an adapter or a run, or to write where nothing can be written."""
    name = recipe.adapter_name
    if resume and overwrite:
        raise ToolkitError(
            f"{param('resume', True)} and {param('overwrite', True)}: choose one (continue the run, or start it over)"
        )
    store.check_writable()
    store.check_unlocked(name)
    if store.exists(name):
        store.require(name)  # refuses a symbolic link or a folder copied under another name
    if resume or overwrite:
        return
    if store.exists(name):
        raise ToolkitError(
            f"adapter {name!r} already exists in {store.root}; pass {param('overwrite', True)} to retrain it, "
            "or set output.name to another name"
        )
    run_folder = store.checkpoints(name)
    if checkpoints.latest_checkpoint(run_folder, report=False) is not None:
        raise ToolkitError(
            f"an unfinished run of {name!r} left checkpoints in {run_folder}; "
            f"pass {param('resume', True)} to continue it or {param('overwrite', True)} to start over"
        )


def _resume_point(store: AdapterStore, name: str, identity: RunIdentity, resume: bool, allow_changed: bool):
    """Where the run starts: None (from scratch), a checkpoint folder, or "finished" (the adapter in the store
    is this very run's). Decided by the run's identity, never by step counts of whatever adapter is there."""
    if not resume:
        return None
    stored = run_identity(read_json(store.path(name) / MANIFEST)) if store.exists(name) else None
    run_folder = store.checkpoints(name)
    checkpoint = checkpoints.latest_checkpoint(run_folder)
    if stored == identity and (
        checkpoint is None or _stored_steps(store, name) >= checkpoints.checkpoint_step(checkpoint)
    ):
        return "finished"
    if checkpoint is not None:
        record = checkpoints.read_run_record(run_folder)
        changed = identity.changes(record.identity) if record else []
        if changed:
            message = f"{_describe_changes(changed)} changed since the checkpoints of {name!r} were written"
            if not allow_changed:
                raise ToolkitError(
                    f"{message}; restore them, pass {param('allow_changed', True)} to resume anyway, "
                    f"or {param('overwrite', True)} to start over"
                )
            log.warning("%s; resuming anyway, as asked", message)
        checkpoints.check_resumable(checkpoint)
        return checkpoint
    if store.exists(name):
        differs = {"recipe": "recipe", "data": "training data", "base": "base model"}
        origin = (
            "trained from another " + (" and ".join(differs[c] for c in identity.changes(stored)) or "run")
            if stored
            else "imported"
        )
        raise ToolkitError(
            f"adapter {name!r} in {store.root} was {origin}, and no checkpoint of this run exists to resume; "
            f"pass {param('overwrite', True)} to train it from this recipe, or set output.name to another name"
        )
    log.info("%s: no complete checkpoint to resume from; starting fresh", name)
    return None


def _stored_steps(store: AdapterStore, name: str) -> int:
    return read_json(store.path(name) / "metrics.json").get("train", {}).get("steps", -1)


def _describe_changes(changed: list[str]) -> str:
    what = {"recipe": "the recipe", "data": "the training data", "base": "the base model's weights"}
    return " and ".join(what[c] for c in changed) or "recipe"


@dataclass(frozen=True)
class _Prepared:
    """What `train` settles, and checks, before anything is written to the store."""

    recipe: Recipe
    store: AdapterStore
    identity: RunIdentity
    model: Any  # the base with its LoRA layers attached
    tokenizer: Any
    packed: PreparedData
    precision: str  # resolved: never "auto"

    @property
    def protocol(self) -> Protocol:
        """How training's evaluations score: windows of the block size, no overlap."""
        d = self.recipe.data
        return Protocol(d.block_size, d.block_size, examples=d.examples)


def _run(run: _Prepared, checkpoint: Path | None, callbacks: tuple) -> TrainResult:
    """Train (or resume) and save: the part of `train` that writes to the store."""
    recipe, name = run.recipe, run.recipe.adapter_name
    run_folder = run.store.checkpoints(name)
    _clear_older_run(run_folder, checkpoint)
    best = BestAdapter(recipe.training, checkpoint) if tracks(recipe.training) else None
    keeper = CheckpointKeeper(
        recipe.training.keep_checkpoints,
        checkpoints.training_seconds(checkpoint),
        write_also=best.save if best else None,
    )
    trainer = _assemble_trainer(run, run_folder, keeper, [*([best] if best else []), *callbacks])
    record = _run_record(trainer, run, run_folder, checkpoint)
    log.info("base perplexity: %.3f over %d tokens", record.base_score.perplexity, record.base_score.tokens)
    _train_or_restore(trainer, run.model, run_folder, checkpoint)
    adapted, kept = _kept_adapter(trainer, run.model, recipe, best)
    metrics = _metrics(trainer, run, record, adapted, kept, keeper.seconds())
    if trainer.is_world_process_zero():
        _save_adapter(
            run.store,
            recipe,
            run.model,
            run.tokenizer,
            run.identity,
            metrics,
            run.packed,
            trainer.state.log_history,
        )
    trainer.accelerator.wait_for_everyone()
    return TrainResult(name, run.store.path(name), metrics, trained=True)


def _clear_older_run(run_folder: Path, checkpoint: Path | None) -> None:
    """A fresh start must never pick up an older run's state. One process removes (concurrent removals of
    one tree can fail); the others wait."""
    with rank_zero_first():
        if checkpoint is None and is_main_process() and run_folder.exists():
            shutil.rmtree(run_folder)


def _assemble_trainer(run: _Prepared, run_folder: Path, keeper: CheckpointKeeper, callbacks: list) -> AdapterTrainer:
    trainer = AdapterTrainer(
        keeper=keeper,
        protocol=run.protocol,
        eval_dataset=run.packed.eval,
        model=run.model,
        args=training_arguments(run.recipe, run_folder, run.precision),
        train_dataset=run.packed.train,
        data_collator=default_data_collator,
        callbacks=[keeper, *callbacks],
    )
    # The Trainer prints raw metric dicts; keep its progress bar (when not -q) and print readable lines.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if log.isEnabledFor(logging.INFO):
        trainer.add_callback(ProgressLines(bar=sys.stderr.isatty()))
    return trainer


def _run_record(trainer: AdapterTrainer, run: _Prepared, run_folder: Path, checkpoint: Path | None) -> RunRecord:
    """The run's identity and its base's score: read back on a resume, else scored now and written first, so
    that every resume compares against the run that started."""
    record = checkpoints.read_run_record(run_folder) if checkpoint else None
    if record is None:
        record = RunRecord(run.identity, trainer.score_evaluation_text("base"))
        if trainer.is_world_process_zero():
            checkpoints.write_run_record(run_folder, record)
    return record


def _train_or_restore(trainer: AdapterTrainer, model, run_folder: Path, checkpoint: Path | None) -> None:
    """Train to the end (from the checkpoint, if any); a run that had already ended is restored instead."""
    if checkpoint is not None and (checkpoints.is_finished(checkpoint) or stopped_early(checkpoint)):
        # The Trainer would train one more step; the weights are all there, so load them instead.
        checkpoints.load_weights(model, checkpoint)
        trainer.state = trainer.state.load_from_json(str(checkpoint / "trainer_state.json"))
        return
    stop = guards.StopOnSignal()
    trainer.add_callback(stop)
    with stop:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if stop.requested:
        saved = checkpoints.latest_checkpoint(run_folder, report=False)
        raise guards.Interrupted(
            f"stopped at step {trainer.state.global_step}; checkpoint saved in {saved}. "
            f"Continue with the same command and {param('resume', True)}",
            exit_code=stop.exit_code,
        )


def _kept_adapter(trainer: AdapterTrainer, model, recipe: Recipe, best: BestAdapter | None) -> tuple[Score, Kept]:
    """The adapter to save and its score: the last step's, or (`training.keep = "best"`) the best one's,
    loaded back into the model."""
    adapted = trainer.final_evaluation()
    if recipe.training.keep != "best":
        return adapted, Kept("last", trainer.state.global_step, best.stopped if best else False)
    best.load_best(model)
    log.info("keeping the adapter of step %d (perplexity %.3f)", best.step, best.score.perplexity)
    return best.score, Kept("best", best.step, best.stopped)


def _metrics(
    trainer: AdapterTrainer, run: _Prepared, record: RunRecord, adapted: Score, kept: Kept, seconds: float
) -> TrainingMetrics:
    tokens = int(trainer.state.num_input_tokens_seen)
    return TrainingMetrics(
        base=record.base_score,
        adapted=adapted,
        protocol=run.protocol,
        precision=run.precision,
        quantization=run.recipe.quantization.mode,
        train=TrainStats(
            steps=trainer.state.global_step,
            epochs=trainer.state.epoch,
            tokens=tokens,
            seconds=seconds,
            tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        ),
        data={"fingerprint": run.packed.fingerprint, **run.packed.stats},
        versions=_versions(),
        kept=kept,
    )


def _save_adapter(
    store,
    recipe: Recipe,
    model,
    tokenizer,
    identity: RunIdentity,
    metrics: TrainingMetrics,
    packed: PreparedData,
    log_history: list,
) -> None:
    """Write the adapter folder atomically: weights, recipe, metrics, card, curves, then the manifest that
    records every file's sha256 and the base and data it was trained on."""
    with store.saving(recipe.adapter_name) as folder:
        model.save_pretrained(folder)
        (folder / "recipe.toml").write_text(recipe.to_toml(), encoding="utf-8")
        (folder / "metrics.json").write_text(json.dumps(metrics.to_json(), indent=2), encoding="utf-8")
        # Every logged step (loss, learning rate, evaluations) of the whole run, resumes included.
        lines = "".join(json.dumps(entry) + "\n" for entry in log_history)
        (folder / "metrics.jsonl").write_text(lines, encoding="utf-8")
        (folder / "README.md").write_text(card.render(recipe, metrics), encoding="utf-8")
        plots.training_curves(log_history, metrics.base.perplexity, folder / "training.png")
        write_manifest(
            folder,
            name=recipe.adapter_name,
            base={
                "name": recorded_name(recipe.model.name),
                "revision": recipe.model.revision,
                "weights_sha256": identity.base,
                "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
            },
            dataset=_dataset_record(recipe, packed),
            recipe_sha256=identity.recipe,
            versions=metrics.versions,
            trained_with=_trained_with(recipe),
        )


def _trained_with(recipe: Recipe) -> dict:
    """What the manifest records of how the adapter was trained, beside what on."""
    d, lo = recipe.data, recipe.lora
    return {
        "quantization": recipe.quantization.mode,
        "use_dora": lo.use_dora,
        "use_rslora": lo.use_rslora,
        "format": d.format,
        **({"template": d.template} if d.examples else {}),
    }


def _dataset_record(recipe: Recipe, packed: PreparedData) -> dict:
    d = recipe.data
    if d.train_files:
        files = {
            "train_files": [str(p.resolve()) for p in packed.source.train_files],
            "eval_files": [str(p.resolve()) for p in packed.source.eval_files],
        }
        return {**files, "text_column": d.text_column, "fingerprint": packed.fingerprint}
    return {
        "dataset": recorded_name(d.dataset),
        "config": d.config,
        "train_split": d.train_split,
        "eval_split": d.eval_split,
        "text_column": d.text_column,
        "fingerprint": packed.fingerprint,
    }


def _report_data(recipe: Recipe, packed: PreparedData) -> None:
    train, evals = packed.stats["train"], packed.stats["eval"]
    if recipe.data.examples:
        log.info(
            "data: %s training examples in %s blocks of %d tokens (%.1f%% padding%s); %s evaluation examples",
            f"{train['documents']:,}",
            f"{len(packed.train):,}",
            recipe.data.block_size,
            100 * train["padding"],
            f", {train['truncated']:,} prompts cut" if train["truncated"] else "",
            f"{evals['documents']:,}",
        )
    else:
        log.info(
            "data: %s training blocks of %d tokens; evaluation text %s tokens",
            f"{len(packed.train):,}",
            recipe.data.block_size,
            f"{packed.eval.tokens:,}",
        )


def _check_loggers(recipe: Recipe) -> None:
    """The recipe's `training.report_to` loggers must be installed here (the recipe checked their names)."""
    from transformers.integrations import get_available_reporting_integrations

    installed = set(get_available_reporting_integrations())
    missing = [t for t in recipe.training.report_to if t not in ("none", "all") and t not in installed]
    if missing:
        raise ToolkitError(
            *(f"training.report_to: {t!r} is not installed; pip install {t}, or remove it" for t in missing)
        )


def _check_step_size(recipe: Recipe, packed: PreparedData) -> None:
    """Refuse an optimizer step that cannot be filled even once by an epoch; warn when one step is the
    whole epoch (every step then sees all the data)."""
    t = recipe.training
    world = launched_world()
    batches = math.ceil(len(packed.train) / (t.batch_size * world))  # forward passes per process per epoch
    if t.grad_accum > batches:
        raise ToolkitError(
            f"training.grad_accum: {t.grad_accum:,} forward passes per optimizer step, but an epoch has only "
            f"{batches:,} per process ({len(packed.train):,} blocks of {recipe.data.block_size} tokens); "
            f"set training.grad_accum to at most {batches:,}"
        )
    if t.grad_accum * t.batch_size * world >= len(packed.train):
        log.warning(
            "one optimizer step (%d blocks) holds the whole epoch (%d blocks): every step sees all the data",
            t.grad_accum * t.batch_size * world,
            len(packed.train),
        )


def _report_adapter(shape: AdapterShape) -> None:
    layers = ", ".join(f"{pattern} x{count}" for pattern, count in shape.layers.items())
    log.info("LoRA on %d layers: %s", shape.matched, layers)
    log.info("trainable parameters: %s of %s (%.3f%%)", f"{shape.trainable:,}", f"{shape.total:,}", 100 * shape.share)


def _versions() -> dict:
    import peft
    import transformers

    return {
        "toolkit": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
