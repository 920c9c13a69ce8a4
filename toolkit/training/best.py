"""The best adapter so far, and early stopping: which weights a run saves, and when it stops.

Each evaluation during training (and the one at the end) is compared with the best so far. A lower
perplexity is the new best: with `training.keep = "best"` its LoRA weights are copied aside. An evaluation
that does not lower the best by at least `training.early_stopping_threshold` counts against the patience;
after `training.early_stopping_patience` of them in a row the run stops. The best (weights, step, score) and
the count are written into every checkpoint before it is marked complete, so a run killed and resumed keeps
the same best and stops at the same step as one never interrupted.

Why not transformers' EarlyStoppingCallback and `load_best_model_at_end`: they need `metric_for_best_model`,
which makes the Trainer remember the best checkpoint's folder, one that the CheckpointKeeper's retention may
delete (and `save_every` would have to be a multiple of `eval_every`); the best model is loaded back only for
an adapter named "default"; and the callback's count survives a resume only with
`restore_callback_states_from_checkpoint`. One callback that keeps the weights and the count together, in the
checkpoint the toolkit already writes safely, is simpler than bending those.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..config.recipe import TrainingSpec
from ..errors import ToolkitError, param
from ..files import read_json, write_json
from ..records import RecordError, Score

log = logging.getLogger(__name__)

WEIGHTS = "gpt2_adapt_best.safetensors"  # in a checkpoint: the best adapter's weights so far (keep = "best")
STATE = "gpt2_adapt_best.json"  # in a checkpoint: the best step and score so far, and the patience count


def tracks(training: TrainingSpec) -> bool:
    """Whether a run needs a BestAdapter: it keeps the best, or stops early."""
    return training.keep == "best" or training.early_stopping_patience > 0


def stopped_early(checkpoint: Path) -> bool:
    """Whether the checkpoint was written at the step where early stopping ended its run."""
    return bool(read_json(checkpoint / STATE).get("stopped", False))


class BestAdapter(TrainerCallback):
    """Follows the evaluations of a run: the best one (its step, score and, if kept, weights) and how many
    in a row have not improved on it; stops the run when the patience runs out."""

    def __init__(self, training: TrainingSpec, checkpoint: Path | None = None):
        self.patience = training.early_stopping_patience
        self.threshold = training.early_stopping_threshold
        self.keep_weights = training.keep == "best"
        self.step: int | None = None  # of the best evaluation
        self.score: Score | None = None
        self.weights: dict[str, torch.Tensor] | None = None
        self.misses = 0  # evaluations in a row without an improvement of at least the threshold
        self.stopped = False
        self.evaluated = -1  # the last step evaluated: the end's evaluation may repeat the Trainer's own
        if checkpoint is not None:
            self._restore(checkpoint)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not metrics or "eval_perplexity" not in metrics or state.global_step == self.evaluated:
            return  # the base's score before training, or a step already counted
        self.evaluated = state.global_step
        score = Score.from_json(
            {key.removeprefix("eval_"): value for key, value in metrics.items() if key.startswith("eval_")}
        )
        best = self.score.perplexity if self.score else None
        if best is None or best - score.perplexity >= self.threshold and score.perplexity < best:
            self.misses = 0
        else:
            self.misses += 1
        if best is None or score.perplexity < best:
            self.step, self.score = state.global_step, score
            if self.keep_weights:
                self.weights = _adapter_weights(model)
        if self.patience and self.misses >= self.patience and not self.stopped and state.global_step < state.max_steps:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = True  # the stop is part of the run's state: a resume must not train on
            log.info(
                "no improvement in %d evaluations: stopping at step %d (best: step %d, perplexity %.3f)",
                self.misses,
                state.global_step,
                self.step,
                self.score.perplexity,
            )

    def load_best(self, model) -> None:
        """Put the best weights back into the model, to be saved in its place."""
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, self.weights)

    # ---------------------------------------------------------------- in the checkpoints

    def save(self, checkpoint: Path) -> None:
        """Write the best so far into a checkpoint (before it is marked complete)."""
        from safetensors.torch import save_file

        if self.weights is not None:
            save_file(self.weights, checkpoint / WEIGHTS)
        write_json(
            checkpoint / STATE,
            {
                "step": self.step,
                "score": self.score.to_json() if self.score else None,
                "misses": self.misses,
                "stopped": self.stopped,
                "evaluated": self.evaluated,
            },
        )

    def _restore(self, checkpoint: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not (checkpoint / STATE).exists() or self.keep_weights and not (checkpoint / WEIGHTS).exists():
            # Written by a run that did not track the best (or kept no weights): training.keep or the
            # early stopping changed on resume (--allow-changed). Nothing is damaged; the best is followed
            # from here on.
            log.warning(
                "checkpoint %s was written by a run that did not keep the best adapter (training.keep or "
                "early stopping changed): the best is tracked from step %s on",
                checkpoint.name,
                checkpoint.name.rpartition("-")[2],
            )
            return
        state = read_json(checkpoint / STATE)
        try:
            self.step, self.misses = state["step"], int(state["misses"])
            self.stopped, self.evaluated = bool(state["stopped"]), int(state["evaluated"])
            self.score = Score.from_json(state["score"]) if state["score"] is not None else None
            if self.keep_weights and self.score is not None:
                self.weights = load_file(checkpoint / WEIGHTS)
        except (KeyError, TypeError, ValueError, RecordError, SafetensorError, OSError) as err:
            what = WEIGHTS if isinstance(err, (SafetensorError, OSError)) else STATE
            raise ToolkitError(
                f"checkpoint {checkpoint} is damaged: {what} cannot be read (the best adapter so far); delete that "
                f"folder to resume from the checkpoint before it, or pass {param('overwrite', True)} to start over"
            ) from None


def _adapter_weights(model) -> dict[str, torch.Tensor]:
    """A copy of the active adapter's weights, as peft saves them."""
    from peft import get_peft_model_state_dict

    return {
        name: tensor.detach().to("cpu", copy=True).contiguous()
        for name, tensor in get_peft_model_state_dict(model).items()
    }
