"""Guards around a training run: Ctrl-C, a loss that stops being finite, and free disk space."""

from __future__ import annotations

import logging
import shutil
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback

from .errors import ToolkitError

log = logging.getLogger(__name__)

# Adam keeps two moments per trainable parameter beside the fp32 weights; the rest of a checkpoint (RNG,
# scheduler and trainer state) is small.
CHECKPOINT_BYTES_PER_PARAMETER = 4 * 3
MARGIN_BYTES = 16 << 20


class Interrupted(ToolkitError):
    """The user stopped the run; a checkpoint was saved. Exit code 130, as for any Ctrl-C."""

    exit_code = 130


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the step, save a checkpoint and stop. Second: stop at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("interrupted: saving a checkpoint after this step (Ctrl-C again to stop at once)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def check_loss(loss, step: int, run_folder: Path) -> None:
    """Stop before a non-finite loss reaches the weights (the optimizer has not stepped yet), so the
    newest checkpoint stays good."""
    import torch

    if not torch.isfinite(loss).all():
        from .checkpoints import latest_checkpoint

        latest = latest_checkpoint(run_folder, report=False)
        kept = f"the last good checkpoint is {latest}" if latest else f"no checkpoint was written yet in {run_folder}"
        raise ToolkitError(
            f"the training loss became {loss.item()} at step {step}; {kept}. "
            "Lower training.learning_rate or keep training.max_grad_norm > 0, then --resume or --overwrite"
        )


def check_free_space(root: Path, trainable_parameters: int, keep_checkpoints: int) -> None:
    """Refuse to start a run whose checkpoints and adapter would not fit on the disk."""
    per_checkpoint = trainable_parameters * CHECKPOINT_BYTES_PER_PARAMETER
    needed = per_checkpoint * (keep_checkpoints + 1) + trainable_parameters * 4 + MARGIN_BYTES
    free = _free_bytes(root)
    if free < needed:
        raise ToolkitError(
            f"not enough free disk space in {_existing(root)}: the run needs about {needed / 1e6:.0f} MB for its "
            f"checkpoints and adapter, {free / 1e6:.0f} MB are free; free some space, lower "
            "training.keep_checkpoints, or point --store elsewhere"
        )


def is_disk_full(err: BaseException, root: Path) -> bool:
    """Whether a failed write ran out of space. torch.save reports a full disk as a RuntimeError from its
    zip writer, so besides ENOSPC, a write error on a disk with (almost) no space left counts too."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, (OSError, RuntimeError)) and _free_bytes(root) < (1 << 20)


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _free_bytes(root: Path) -> int:
    return shutil.disk_usage(_existing(Path(root))).free
