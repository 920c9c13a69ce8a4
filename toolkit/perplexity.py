"""Perplexity of a causal LM on packed blocks, computed from summed token NLLs and reported through the
toolkit's local `evaluate` metric (never exp of a mean of batch losses, never the Trainer's eval_loss).

Protocol ("disjoint"): the evaluation text is packed into blocks of `block_size` tokens exactly as for
training; each block is scored on its own, so its first token is context only and its other
block_size - 1 tokens are predicted. Perplexity = exp(sum of their NLL / their count).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

METRIC_PATH = Path(__file__).parent / "metrics" / "token_perplexity.py"


def load_metric():
    import evaluate

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


@torch.no_grad()
def score_blocks(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block: the summed NLL (float64) of tokens 1..n-1 given their left context, and their count."""
    logits = model(input_ids=input_ids).logits
    targets = input_ids[:, 1:]
    # One row at a time keeps the fp32 copy of the logits to one block's worth (50k x block_size).
    nll = torch.stack(
        [F.cross_entropy(logits[i, :-1].float(), targets[i], reduction="sum") for i in range(len(input_ids))]
    )
    tokens = torch.full_like(nll, targets.shape[1], dtype=torch.int64)
    return nll.double(), tokens


def perplexity(model, batches, device=None, gather=lambda x: x, autocast=contextlib.nullcontext) -> dict:
    """Score every block of `batches` (dicts with "input_ids") and return the metric's result.

    `gather` combines per-process tensors under distributed evaluation; `autocast` is the mixed
    precision context the model trains under.
    """
    metric = load_metric()
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids = batch["input_ids"]
            if device is not None:
                ids = ids.to(device)
            with autocast():
                nll, tokens = score_blocks(model, ids)
            nll, tokens = gather((nll, tokens))
            metric.add_batch(nll=nll.tolist(), tokens=tokens.tolist())
    finally:
        model.train(was_training)
    return metric.compute()
