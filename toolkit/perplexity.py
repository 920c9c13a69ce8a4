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

from .head_loss import compute_weight, summed_nll

METRIC_PATH = Path(__file__).parent / "metrics" / "token_perplexity.py"


def load_metric():
    import evaluate

    return evaluate.load(str(METRIC_PATH), keep_in_memory=True)


@torch.no_grad()
def score_blocks(model, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block: the summed NLL (float64) of tokens 1..n-1 given their left context, and their count.
    The output layer runs a chunk of positions at a time (head_loss), as in training."""
    hidden = model(input_ids=input_ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    weight = compute_weight(model.get_output_embeddings().weight)  # cast once, not once per block
    nll = torch.stack([summed_nll(hidden[i : i + 1], weight, input_ids[i : i + 1]) for i in range(len(input_ids))])
    tokens = torch.full_like(nll, input_ids.shape[1] - 1, dtype=torch.int64)
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
