"""Guards around a training run: Ctrl-C and SIGTERM, a loss that stops being finite, and free disk space."""

from __future__ import annotations

import logging
import math
import shutil
import signal
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..errors import ToolkitError, param

log = logging.getLogger(__name__)

# Adam keeps two moments per trainable parameter beside the fp32 weights; the rest of a checkpoint (RNG,
# scheduler and trainer state) is small.
CHECKPOINT_BYTES_PER_PARAMETER = 4 * 3
MARGIN_BYTES = 16 << 20
# A process stopped by a signal exits with 128 + its number, as the shell reports it.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(ToolkitError):
    """The user (Ctrl-C) or the system (SIGTERM) stopped the run; a checkpoint was saved."""

    exit_code = 130

    def __init__(self, *problems: str, exit_code: int = 130):
        super().__init__(*problems)
        self.exit_code = exit_code

    def prefixed(self, prefix: str) -> Interrupted:
        return Interrupted(*(prefix + p for p in self.raw), exit_code=self.exit_code)


class StopOnSignal(TrainerCallback):
    """First Ctrl-C or SIGTERM: finish the step, save a checkpoint and stop. A second Ctrl-C: stop at once."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received, 130)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for sig in EXIT_CODES:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signal.Signals(signum)
            log.warning(
                "%s: saving a checkpoint after this step (Ctrl-C again to stop at once)",
                "interrupted" if signum == signal.SIGINT else "terminated (SIGTERM)",
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def check_loss(loss: torch.Tensor, step: int, run_folder: Path) -> None:
    """Stop before a non-finite loss reaches the weights (the optimizer has not stepped yet), so the newest
    checkpoint stays good. Under torch.distributed every process looks at every process's loss, so all stop
    at the same step with the same message instead of the others waiting in the next collective."""
    values = _all_losses(loss.detach().float().reshape(1)).tolist()
    bad_at = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
    if bad_at is None:
        return
    from .checkpoints import latest_checkpoint

    bad = values[bad_at]
    where = f" on process {bad_at}" if len(values) > 1 else ""
    latest = latest_checkpoint(run_folder, report=False)
    kept = f"the last good checkpoint is {latest}" if latest else f"no checkpoint was written yet in {run_folder}"
    raise ToolkitError(
        f"the training loss became {bad}{where} at step {step}; {kept}. Lower training.learning_rate or keep "
        f"training.max_grad_norm > 0, then train again with {param('resume', True)} or {param('overwrite', True)}"
    )


def _all_losses(loss: torch.Tensor) -> torch.Tensor:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return loss.cpu()
    everyone = [torch.zeros_like(loss) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(everyone, loss)
    return torch.cat(everyone).cpu()


def check_free_space(root: Path, trainable_parameters: int, keep_checkpoints: int, store_setting: str) -> None:
    """Refuse to start a run whose checkpoints and adapter would not fit on the disk."""
    per_checkpoint = trainable_parameters * CHECKPOINT_BYTES_PER_PARAMETER
    needed = per_checkpoint * (keep_checkpoints + 1) + trainable_parameters * 4 + MARGIN_BYTES
    free = _free_bytes(root)
    if free < needed:
        raise ToolkitError(
            f"not enough free disk space in {_existing(root)}: the run needs about {needed / 1e6:.0f} MB for its "
            f"checkpoints and adapter, {free / 1e6:.0f} MB are free; free some space, lower "
            f"training.keep_checkpoints, or point {store_setting} elsewhere"
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
