"""The Hugging Face Trainer as the toolkit runs it: its loss from the chunked output layer, its evaluation
by the toolkit's scorer, its arguments from the recipe, and progress lines a person reads."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ProgressCallback

from ..config.recipe import Recipe
from ..data.streams import TokenStream
from ..evaluation.scoring import score
from ..modeling import head_loss
from ..modeling.base import scoring_attention
from ..records import Protocol, Score
from ..threads import ThreadChoice, ThreadGovernor
from .checkpoints import CheckpointKeeper
from .guards import check_loss

log = logging.getLogger(__name__)


def training_arguments(recipe: Recipe, output_dir: Path, precision: str) -> TrainingArguments:
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
        include_num_input_tokens_seen="all",  # every position of the blocks (examples: their padding too)
        ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


class AdapterTrainer(Trainer):
    """The Trainer with its evaluation replaced by the toolkit's scorer (the evaluation text as one token
    stream, by `protocol`), and its loss computed by `head_loss` (no full-vocabulary logits) wherever the
    output layer is whole on every process."""

    def __init__(self, keeper: CheckpointKeeper, protocol: Protocol, eval_dataset: TokenStream, **kwargs):
        self.fused_head = head_loss.applies(kwargs["args"])
        if self.fused_head:
            kwargs["compute_loss_func"] = self._head_loss
        # The stream stands where the Trainer expects an evaluation dataset; only evaluate() below reads it.
        super().__init__(eval_dataset=eval_dataset, **kwargs)
        self.keeper = keeper
        self.protocol = protocol
        self.last_evaluation: tuple[int, Score] | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # No key/value cache: with one, transformers would not read packed examples' restarting position_ids
        # as the sequences they are, and examples would attend to the ones before them in their block.
        inputs = {**inputs, "use_cache": False}
        if self.fused_head:
            # Only the last position's logits (the model insists on some) and the final hidden states.
            inputs |= {"output_hidden_states": True, "logits_to_keep": 1}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _head_loss(self, outputs, labels, num_items_in_batch=None):
        """The mean NLL over the scored tokens of the whole (accumulated, all-process) batch, as the model's
        own loss with num_items_in_batch; the Trainer then scales it as it scales that one."""
        head = self.accelerator.unwrap_model(self.model).get_output_embeddings()
        # accelerate's autocast wraps the model's forward only; the output layer belongs under it too.
        with self.accelerator.autocast():
            total = head_loss.summed_nll(outputs.hidden_states[-1], head.weight, labels)
        count = (
            num_items_in_batch if num_items_in_batch is not None else (labels[:, 1:] != head_loss.IGNORE_INDEX).sum()
        )
        return total / count

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        check_loss(loss, self.state.global_step + 1, Path(self.args.output_dir))
        return loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval") -> dict:
        score_ = self.score_evaluation_text(metric_key_prefix)
        return {f"{metric_key_prefix}_{key}": value for key, value in score_.to_json().items()}

    def score_evaluation_text(self, prefix: str = "eval") -> Score:
        """Score the evaluation text, log it (as `<prefix>_perplexity`, ...) and tell the callbacks."""
        started = time.perf_counter()
        with scoring_attention(self.model):
            scored = score(
                self.model,
                self.eval_dataset,
                self.protocol,
                batch_size=self.args.per_device_eval_batch_size,
                autocast=self.accelerator.autocast,  # the training precision, before and after prepare()
            )
        metrics = {f"{prefix}_{key}": value for key, value in scored.score.to_json().items()}
        self.log(dict(metrics))  # log() adds epoch and token counts to the dict it is given
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        if self.keeper.started is not None:
            self.keeper.paused += time.perf_counter() - started
        self.last_evaluation = (self.state.global_step, scored.score)
        return scored.score

    def final_evaluation(self) -> Score:
        """The evaluation at the last step: the Trainer's own when it ran one there, else a new one."""
        if self.last_evaluation and self.last_evaluation[0] == self.state.global_step:
            return self.last_evaluation[1]
        return self.score_evaluation_text()


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


class FollowLoad(TrainerCallback):
    """At the end of each step, moves torch to the threads the machine's load now calls for: one busy
    program starting or stopping beside a long run changes its best thread count (docs/speed.md)."""

    def __init__(self, first: ThreadChoice):
        self.governor = ThreadGovernor("training", first)

    def on_step_end(self, args, state, control, **kwargs):
        self.governor.update()
