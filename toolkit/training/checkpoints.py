"""Training checkpoints that survive being killed at any moment.

The Trainer writes a checkpoint in place, file after file, and resumes from the highest-numbered folder
whatever state it is in. Here a checkpoint counts only once its files are synced and a marker (the
progress record) is written last; resuming takes the newest marked one, and retention deletes older
checkpoints only after a newer one is marked, so the only complete checkpoint is never removed.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from transformers import TrainerCallback

from ..errors import ToolkitError, param
from ..files import fsync_tree, read_json, write_json
from ..modeling.fingerprints import tensor_shapes
from ..records import RecordError, RunIdentity, Score
from ..store.manifest import WEIGHTS

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"  # beside the checkpoints: what the run is (recipe, data, base) and the base perplexity
PROGRESS = "gpt2_adapt_progress.json"  # in a checkpoint, written last: its presence marks it complete
PREFIX = "checkpoint-"
# What resuming reads from a checkpoint besides the marker (the Trainer resumes without the last two, silently).
RESUME_FILES = ("trainer_state.json", WEIGHTS, "optimizer.pt", "scheduler.pt")


def checkpoint_step(folder: Path) -> int:
    return int(folder.name.removeprefix(PREFIX))


def all_checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob(f"{PREFIX}*") if p.is_dir() and p.name.removeprefix(PREFIX).isdigit()]
    return sorted(found, key=checkpoint_step)


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / PROGRESS).is_file()


def latest_checkpoint(folder: Path, report: bool = True) -> Path | None:
    """The newest complete checkpoint; newer incomplete ones (a run killed mid-save) are reported and skipped."""
    latest = None
    for checkpoint in all_checkpoints(folder):
        if is_complete(checkpoint):
            latest = checkpoint
        elif report:
            log.warning("skipping incomplete checkpoint %s (the run stopped while writing it)", checkpoint)
    return latest


def check_resumable(checkpoint: Path) -> None:
    """Refuse a complete checkpoint that was damaged afterwards (a file deleted, truncated or overwritten)
    before anything reads it: the Trainer would stop with a traceback, or go on with a fresh optimizer."""
    problem = _damage(checkpoint)
    if problem:
        raise ToolkitError(
            f"checkpoint {checkpoint} is damaged: {problem}; delete that folder to resume from the checkpoint "
            f"before it (or from the start), or pass {param('overwrite', True)} to start over"
        )


def _damage(checkpoint: Path) -> str | None:
    for name in RESUME_FILES:
        if not (checkpoint / name).is_file():
            return f"{name} is missing"
    state = read_json(checkpoint / "trainer_state.json")
    if not isinstance(state, dict) or "global_step" not in state:
        return "trainer_state.json is not a trainer state"
    try:
        tensor_shapes(checkpoint / WEIGHTS)
    except (SafetensorError, OSError) as err:
        return f"adapter_model.safetensors cannot be read ({err})"
    for path in sorted(checkpoint.glob("*.pt")) + sorted(checkpoint.glob("*.pth")):
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; a truncated one has lost its directory
            return f"{path.name} cannot be read (truncated?)"
    return None


def is_finished(checkpoint: Path) -> bool:
    """Whether the checkpoint holds the last step (resuming it would make the Trainer train one more)."""
    state = read_json(checkpoint / "trainer_state.json")
    return state.get("global_step", 0) >= state.get("max_steps", math.inf)


def load_weights(model, checkpoint: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / WEIGHTS))


def training_seconds(checkpoint: Path | None) -> float:
    return read_json(checkpoint / PROGRESS).get("seconds", 0.0) if checkpoint else 0.0


@dataclass(frozen=True)
class RunRecord:
    """What the checkpoints of a run belong to, and the base's score measured before its first step (so that
    a resumed run does not measure it again)."""

    identity: RunIdentity
    base_score: Score

    def to_json(self) -> dict:
        return {**self.identity.to_json(), "base_perplexity": self.base_score.to_json()}


def write_run_record(folder: Path, record: RunRecord) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RUN_RECORD, record.to_json())


def read_run_record(folder: Path) -> RunRecord | None:
    """The run's record, or None when there is none (or it is damaged: the run is then measured afresh)."""
    data = read_json(folder / RUN_RECORD)
    try:
        return RunRecord(RunIdentity.from_json(data), Score.from_json(data["base_perplexity"]))
    except (RecordError, KeyError, TypeError):
        return None


class CheckpointKeeper(TrainerCallback):
    """Marks each checkpoint complete once it is on disk, keeps the newest `keep` complete ones, and
    counts training seconds across resumes (evaluation time excluded). `write_also(checkpoint)` adds what
    else a run must resume from (the best adapter so far) before the checkpoint is marked."""

    def __init__(self, keep: int, seconds_before: float = 0.0, write_also: Callable[[Path], None] | None = None):
        self.keep = keep
        self.before = seconds_before
        self.write_also = write_also
        self.started: float | None = None
        self.paused = 0.0

    def seconds(self) -> float:
        if self.started is None:
            return self.before
        return self.before + time.perf_counter() - self.started - self.paused

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint = Path(args.output_dir) / f"{PREFIX}{state.global_step}"
        if self.write_also:
            self.write_also(checkpoint)
        fsync_tree(checkpoint)
        write_json(checkpoint / PROGRESS, {"step": state.global_step, "seconds": self.seconds()})
        fsync_tree(checkpoint)
        self._rotate(Path(args.output_dir))

    def _rotate(self, folder: Path) -> None:
        complete = [c for c in all_checkpoints(folder) if is_complete(c)]
        keep = set(complete[-self.keep :])
        newest = checkpoint_step(complete[-1])
        for checkpoint in all_checkpoints(folder):
            # Older than the newest complete one and not kept: superseded (or a half-written leftover).
            if checkpoint not in keep and checkpoint_step(checkpoint) < newest:
                shutil.rmtree(checkpoint, ignore_errors=True)
