"""The one NLL scorer: a causal LM on a token stream by a protocol, behind `gpt2-adapt eval`, training's
evaluations and `toolkit.evaluate`.

Each window runs the transformer once; windows of different lengths (short documents, by document) share a
batch padded on the right, which changes nothing before the padding since attention is causal. The output
layer runs only where a token is scored, a few hundred positions at a time (the logits of every position
would be most of the memory). Per-token log-softmax is in
fp32, sums in float64, and the figures come out of the toolkit's `evaluate` metric. Under torch.distributed
every process scores its share of the windows and all of them get the same result.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.streams import TokenStream
from ..distributed import process
from ..errors import ToolkitError, param
from ..modeling.switching import base_of
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

    `model` is a GPT-2 LM, or a peft model around one (its active adapter is used). `batch_size`: windows
    per forward pass; 0 fills each batch up to the device's token budget. On CUDA, a batch that runs out
    of memory is split and later batches shrink. `autocast` is the mixed-precision context to score under
    (training's own). The stream must have been counted for the protocol (`by_document` alike, examples
    for examples).
    """
    from tqdm.auto import tqdm

    if stream.by_document != protocol.by_document or (stream.scored is not None) != protocol.examples:
        raise ValueError(
            "the stream was counted for another protocol: build it with by_document (or as examples) as the protocol's"
        )
    todo = windows(stream, protocol, max_tokens)
    rank, world = process()
    # Longest first, so that a batch pads little; order does not change the sums.
    mine = sorted(todo[rank::world], key=lambda w: w.hi - w.start, reverse=True)
    lm = base_of(model)
    device = lm.get_output_embeddings().weight.device
    budget = CUDA_TOKENS_PER_BATCH if device.type == "cuda" else CPU_TOKENS_PER_BATCH
    scored = np.ones(len(stream.ids), dtype=bool) if stream.scored is None else stream.scored
    totals = _RunningTotals.along(stream, scored)
    sums = []  # per window: nll, tokens, bytes, words
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        total = sum(w.hi - w.lo for w in mine)
        with tqdm(total=total, unit="tok", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
            for batch, nll in _scored_batches(lm, stream.ids, scored, mine, batch_size, budget, device, autocast):
                sums.extend(totals.row(w, value) for w, value in zip(batch, nll.tolist()))
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


@dataclass(frozen=True)
class _RunningTotals:
    """Sums along the stream from its start, so that a window's scored tokens, bytes and words are two
    lookups each (of a text every token a window scores counts; of examples the completions')."""

    tokens: np.ndarray
    nbytes: np.ndarray
    words: np.ndarray

    @classmethod
    def along(cls, stream: TokenStream, scored: np.ndarray) -> _RunningTotals:
        def running(counts) -> np.ndarray:
            return np.concatenate([[0], np.cumsum(counts)])

        return cls(running(scored), running(stream.nbytes), running(stream.words))

    def row(self, w: Window, nll: float) -> tuple[float, int, int, int]:
        return (
            nll,
            int(self.tokens[w.hi] - self.tokens[w.lo]),
            int(self.nbytes[w.hi] - self.nbytes[w.lo]),
            int(self.words[w.hi] - self.words[w.lo]),
        )


def _scored_batches(
    lm, ids: np.ndarray, scored: np.ndarray, todo: list[Window], batch_size: int, budget: int, device, autocast
) -> Iterator[tuple[list[Window], torch.Tensor]]:
    """Each batch of windows with its windows' NLL. A batch that runs out of GPU memory is split, and
    everything not yet scored is planned again at the smaller size, not just that batch."""
    queue = collections.deque(_batches(todo, batch_size, budget))
    while queue:
        batch = queue.popleft()
        try:
            with autocast():
                nll = _score_windows(lm, ids, scored, batch, device)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                context = batch[0].hi - 1 - batch[0].start
                raise ToolkitError(
                    f"one window of {context} tokens does not fit in GPU memory; lower {param('context')}"
                ) from None
            torch.cuda.empty_cache()
            batch_size = len(batch) // 2
            log.info("out of memory: batches of %d windows from here on", batch_size)
            queue = collections.deque(_batches([*batch, *itertools.chain.from_iterable(queue)], batch_size, budget))
            continue
        yield batch, nll


def _gather(rows: list) -> list:
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, rows)
    return [row for part in everyone for row in part]


def _batches(todo: list[Window], batch_size: int, budget: int) -> list[list[Window]]:
    """Consecutive windows, `batch_size` at a time, or (0) as many as fit `budget` tokens once padded to the
    first (the longest: `todo` is sorted)."""
    batches: list[list[Window]] = []
    for w in todo:
        if batches:
            last = batches[-1]
            room = batch_size if batch_size > 0 else max(1, budget // (last[0].hi - 1 - last[0].start))
            if len(last) < room:
                last.append(w)
                continue
        batches.append([w])
    return batches


@torch.inference_mode()
def _score_windows(lm, ids: np.ndarray, scored: np.ndarray, batch: list[Window], device) -> torch.Tensor:
    """Per window: the summed NLL (float64) of its scored tokens (`scored` marks them: of a text all the
    window scores, of examples their completions), each given the window's tokens before it."""
    length = max(w.hi - 1 - w.start for w in batch)
    inputs = np.zeros((len(batch), length), dtype=np.int64)  # padded on the right: causal attention ignores it
    rows, columns, targets = [], [], []
    for row, w in enumerate(batch):
        inputs[row, : w.hi - 1 - w.start] = ids[w.start : w.hi - 1]
        positions = w.lo + np.flatnonzero(scored[w.lo : w.hi])
        rows.append(np.full(len(positions), row))
        columns.append(positions - 1 - w.start)  # position p is predicted at p - 1
        targets.append(ids[positions])
    hidden = lm.transformer(input_ids=torch.from_numpy(inputs).to(device), use_cache=False).last_hidden_state
    hidden = hidden[
        torch.from_numpy(np.concatenate(rows)).to(device), torch.from_numpy(np.concatenate(columns)).to(device)
    ]
    targets = torch.from_numpy(np.concatenate(targets)).to(device)
    head = lm.get_output_embeddings()
    nll = torch.empty(len(targets), dtype=torch.float64)
    for at in range(0, len(targets), HEAD_ROWS):
        logits = head(hidden[at : at + HEAD_ROWS].to(head.weight.dtype)).float()
        nll[at : at + HEAD_ROWS] = (
            F.cross_entropy(logits, targets[at : at + HEAD_ROWS], reduction="none").double().cpu()
        )
    counts = torch.tensor([len(c) for c in columns])
    return torch.zeros(len(batch), dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(len(batch)), counts), nll
    )
