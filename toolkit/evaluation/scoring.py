"""The one NLL scorer: a causal LM on a token stream by a protocol, behind `gpt2-adapt eval`, training's
evaluations and `toolkit.evaluate`.

Each window runs the transformer once; the output layer runs only where a token is scored, a few hundred
positions at a time (the logits of every position would be most of the memory). Per-token log-softmax is in
fp32, sums in float64, and the figures come out of the toolkit's `evaluate` metric. Under torch.distributed
every process scores its share of the windows and all of them get the same result.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.streams import TokenStream
from ..errors import ToolkitError, param
from ..records import Protocol, Score
from .metric import load_metric
from .protocol import Window, windows

log = logging.getLogger(__name__)

CPU_TOKENS_PER_BATCH = 8192  # beyond this a CPU gains nothing from bigger matrices, and memory grows
CUDA_TOKENS_PER_BATCH = 65536  # a start; halved on out-of-memory until a batch fits
HEAD_ROWS = 1024  # positions per call of the output layer: bounds the fp32 logits to HEAD_ROWS x vocab


@dataclass(frozen=True)
class Scored:
    score: Score
    seconds: float  # of scoring

    @property
    def tokens_per_second(self) -> float:
        return self.score.tokens / self.seconds if self.seconds > 0 else 0.0


def score(
    model,
    stream: TokenStream,
    protocol: Protocol,
    *,
    batch_size: int = 0,
    max_tokens: int | None = None,
    progress: bool = False,
    label: str = "",
    autocast=contextlib.nullcontext,
) -> Scored:
    """Score the stream by the protocol: perplexity, bits per byte, byte and word perplexity, and the counts.

    `model` is a GPT-2 LM, or a peft model around one (its active adapter is used). `batch_size` 0 picks
    one from the context; on CUDA, a batch that runs out of memory is split and later batches shrink.
    `autocast` is the mixed-precision context to score under (training's own).
    """
    from tqdm.auto import tqdm

    todo = windows(len(stream.ids), protocol, max_tokens)
    if not todo:
        raise ToolkitError(
            f"the text has {len(stream.ids)} tokens, fewer than one window of {protocol.context}; "
            f"add text or lower {param('context')}"
        )
    rank, world = _process()
    mine = todo[rank::world]
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = lm.get_output_embeddings().weight.device
    if batch_size <= 0:
        budget = CUDA_TOKENS_PER_BATCH if device.type == "cuda" else CPU_TOKENS_PER_BATCH
        batch_size = max(1, budget // protocol.context)
    byte_sums = np.concatenate([[0], np.cumsum(stream.nbytes)])
    word_sums = np.concatenate([[0], np.cumsum(stream.words)])
    scored = np.ones(len(stream.ids), dtype=bool) if stream.scored is None else stream.scored
    token_sums = np.concatenate([[0], np.cumsum(scored)])  # of a text every token a window scores counts
    sums = []  # per window: nll, tokens, bytes, words
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        total = sum(w.hi - w.lo for w in mine)
        with tqdm(total=total, unit="tok", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
            queue = collections.deque(_batches(mine, batch_size))
            while queue:
                batch = queue.popleft()
                try:
                    with autocast():
                        nll = _score_windows(lm, stream, scored, batch, device)
                except torch.OutOfMemoryError:
                    if len(batch) == 1:
                        raise ToolkitError(
                            f"one window of {protocol.context} tokens does not fit in GPU memory; "
                            f"lower {param('context')}"
                        ) from None
                    torch.cuda.empty_cache()
                    batch_size = len(batch) // 2
                    log.info("out of memory: batches of %d windows from here on", batch_size)
                    # Re-plan everything not yet scored at the smaller size, not just this batch.
                    queue = collections.deque(_batches([*batch, *itertools.chain.from_iterable(queue)], batch_size))
                    continue
                for w, value in zip(batch, nll.tolist()):
                    sums.append((value, int(token_sums[w.hi] - token_sums[w.lo]), int(byte_sums[w.hi] - byte_sums[w.lo]),
                                 int(word_sums[w.hi] - word_sums[w.lo])))
                bar.update(sum(w.hi - w.lo for w in batch))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    if world > 1:
        sums = _gather(sums)
    metric = load_metric("text")
    nll, tokens, nbytes, words = (list(column) for column in zip(*sums))
    metric.add_batch(nll=nll, tokens=tokens, bytes=nbytes, words=words)
    return Scored(Score(**metric.compute()), seconds)


def _process() -> tuple[int, int]:
    """This process's rank and the number of processes under torch.distributed; (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(rows: list) -> list:
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, rows)
    return [row for part in everyone for row in part]


def _batches(todo: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows that score the same positions of themselves (so one slice serves the batch)."""
    batches: list[list[Window]] = []
    for w in todo:
        shape = (w.lo - w.start, w.hi - w.start)
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (last[0].lo - last[0].start, last[0].hi - last[0].start) == shape:
            last.append(w)
        else:
            batches.append([w])
    return batches


@torch.inference_mode()
def _score_windows(lm, stream: TokenStream, scored: np.ndarray, batch: list[Window], device) -> torch.Tensor:
    """Per window: the summed NLL (float64) of its scored tokens, each given the window's tokens before it
    (of packed examples, given its own example's tokens before it: their positions restart at 0, which makes
    transformers mask attention block by block)."""
    first, last = batch[0].lo - batch[0].start, batch[0].hi - batch[0].start
    inputs = torch.from_numpy(np.stack([stream.ids[w.start : w.hi] for w in batch])).to(device)
    extra = {}
    if stream.positions is not None:
        extra["position_ids"] = torch.from_numpy(np.stack([stream.positions[w.start : w.hi] for w in batch])).to(device)
    hidden = lm.transformer(input_ids=inputs, use_cache=False, **extra).last_hidden_state
    head = lm.get_output_embeddings()
    # The prediction of position p comes from the hidden state at p - 1; only scored positions are kept.
    keep = torch.from_numpy(np.stack([scored[w.start + first : w.start + last] for w in batch])).to(device)
    hidden = hidden[:, first - 1 : last - 1][keep]
    targets = inputs[:, first:last][keep]
    nll = torch.empty(len(targets), dtype=torch.float64)
    for at in range(0, len(targets), HEAD_ROWS):
        logits = head(hidden[at : at + HEAD_ROWS].to(head.weight.dtype)).float()
        nll[at : at + HEAD_ROWS] = F.cross_entropy(logits, targets[at : at + HEAD_ROWS], reduction="none").double().cpu()
    rows = torch.arange(len(batch)).repeat_interleave(keep.sum(dim=1).cpu())
    return torch.zeros(len(batch), dtype=torch.float64).index_add_(0, rows, nll)
