"""Perplexity of a causal LM on any text, by a stated protocol: the engine behind `gpt2-adapt eval`.

Text to tokens, as training reads it: each non-blank row of the text column is a document; each is
tokenized alone and followed by EOS, and the documents are concatenated into one stream.

Protocol (context C, stride S, 1 <= S <= C): window k holds stream tokens [kS, kS + C). Only full windows
are used, so the tail of fewer than S tokens after the last one is not scored (as training drops its final
partial block). Window 0 scores its tokens 1 .. C-1; window k > 0 scores the tokens it adds beyond window
k-1, [(k-1)S + C, kS + C), except a token at its own first position, which has no context in the window
(that happens only when S = C). So every scored token is scored once, with at least C - S tokens of
left context (all of it, up to C - 1, for S = 1), and S = C gives disjoint blocks: training's evaluation.

Counts: every token carries the UTF-8 bytes of the text it stands for (EOS: 1, the newline that ends a
document's line) and the number of words that begin in it (EOS: 1, the end of the document, counted as a
word as in WikiText's word-level convention); a word is a run of non-whitespace (`str.split()`). Summed
over the scored tokens they are the `bytes` and `words` that bits per byte and word perplexity divide by.
"""

from __future__ import annotations

import collections
import itertools
import logging
import re
import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import data
from .errors import ToolkitError
from .perplexity import METRIC_PATH

log = logging.getLogger(__name__)

EOS_BYTES = 1  # a document's end is the newline that ends its line in a text file
EOS_WORDS = 1  # ... and a word, as <eos> is in WikiText's word-level perplexity
CPU_TOKENS_PER_BATCH = 8192  # beyond this a CPU gains nothing from bigger matrices, and memory grows
CUDA_TOKENS_PER_BATCH = 65536  # a start; halved on out-of-memory until a batch fits
HEAD_ROWS = 1024  # positions per call of the output layer: bounds the fp32 logits to HEAD_ROWS x vocab
_WORD = re.compile(r"\S+")  # the words of str.split()


@dataclass(frozen=True)
class Protocol:
    context: int  # tokens per window (at most the model's n_positions)
    stride: int  # tokens from one window's start to the next; = context: disjoint blocks

    @property
    def kind(self) -> str:
        return "disjoint" if self.stride == self.context else "sliding"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "context": self.context, "stride": self.stride}

    def check(self, n_positions: int | None = None, model: str = "the model") -> None:
        """Refuse windows the protocol cannot make, or that the model cannot see at once."""
        if self.context < 2:
            raise ToolkitError(f"--context: must be at least 2 tokens (got {self.context})")
        if n_positions is not None and self.context > n_positions:
            raise ToolkitError(
                f"--context: {self.context} exceeds the context of {model} ({n_positions} tokens); "
                f"use at most {n_positions}"
            )
        if not 1 <= self.stride <= self.context:
            raise ToolkitError(
                f"--stride: must be between 1 and the context ({self.context} tokens), got {self.stride}; "
                "a larger stride would skip tokens"
            )


class Window(NamedTuple):
    start: int  # stream position of the window's first token
    lo: int  # first scored stream position
    hi: int  # one past the last scored position


@dataclass(frozen=True)
class TokenStream:
    ids: np.ndarray  # token ids, EOS after each document
    nbytes: np.ndarray  # per token: UTF-8 bytes of the text it stands for
    words: np.ndarray  # per token: words that begin in it
    documents: int


# ---------------------------------------------------------------- text to tokens


def token_stream(documents, text_column: str, tokenizer, limit: int | None = None) -> TokenStream:
    """Tokenize documents (blank rows skipped) into one stream with EOS after each, with per-token byte
    and word counts; stop once the stream holds `limit` tokens (the whole text when None)."""
    eos = tokenizer.eos_token_id
    if not tokenizer.is_fast or eos is None:
        raise ToolkitError("the tokenizer must be a fast GPT-2 tokenizer with an EOS token")
    table = token_byte_lengths(tokenizer)
    ids, nbytes, words, count, length = [], [], [], 0, 0
    for texts in data.document_batches(documents, text_column):
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for text, doc_ids in zip(texts, encoded["input_ids"]):
            doc_ids = np.asarray(doc_ids, dtype=np.int64)
            doc_bytes = table[doc_ids]
            ids += [doc_ids, [eos]]
            nbytes += [doc_bytes, [EOS_BYTES]]
            words += [word_starts(text, doc_bytes), [EOS_WORDS]]
            count += 1
            length += len(doc_ids) + 1
            if limit is not None and length >= limit:
                break
        if limit is not None and length >= limit:
            break
    if count == 0:
        raise ToolkitError("the text has no document that is not blank; nothing to score")
    return TokenStream(
        ids=np.concatenate(ids).astype(np.int64),
        nbytes=np.concatenate(nbytes).astype(np.int64),
        words=np.concatenate(words).astype(np.int64),
        documents=count,
    )


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes per token id. A byte-level BPE token is written with one character per byte; an added
    token (such as <|endoftext|> met inside a text) stands for its own text."""
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.asarray(
        [len(added[i].encode()) if i in added else len(piece or "") for i, piece in enumerate(pieces)],
        dtype=np.int64,
    )


def word_starts(text: str, token_bytes: np.ndarray) -> np.ndarray:
    """Per token of `text`: how many words (runs of non-whitespace) begin in its bytes."""
    raw = np.frombuffer(text.encode(), dtype=np.uint8)
    if int(token_bytes.sum()) != len(raw):
        raise ToolkitError(
            "the tokenizer does not map text to tokens byte for byte (not a plain byte-level BPE), so bytes "
            "and words cannot be counted exactly; use the model's own GPT-2 tokenizer"
        )
    starts = np.fromiter((m.start() for m in _WORD.finditer(text)), dtype=np.int64)
    if not text.isascii():  # character offsets to byte offsets: a character begins at every non-continuation byte
        starts = np.flatnonzero((raw & 0xC0) != 0x80)[starts]
    token_of = np.searchsorted(np.cumsum(token_bytes), starts, side="right")
    return np.bincount(token_of, minlength=len(token_bytes))


# ---------------------------------------------------------------- the protocol


def windows(n_tokens: int, protocol: Protocol, max_tokens: int | None = None) -> list[Window]:
    """The windows over a stream of n_tokens and what each scores; with max_tokens, only the first
    max_tokens scored tokens (the last window cut short)."""
    c, s = protocol.context, protocol.stride
    out, scored, previous_hi = [], 0, 0
    for start in range(0, n_tokens - c + 1, s):
        lo, hi = max(start + 1, previous_hi), start + c
        previous_hi = hi
        if max_tokens is not None and scored + hi - lo >= max_tokens:
            out.append(Window(start, lo, lo + max_tokens - scored))
            break
        out.append(Window(start, lo, hi))
        scored += hi - lo
    return out


def tokens_needed(protocol: Protocol, max_tokens: int) -> int:
    """A stream length that surely holds the windows that score the first max_tokens tokens."""
    per_window = min(protocol.stride, protocol.context - 1)  # every window scores at least this many
    return (max_tokens // per_window + 1) * protocol.stride + protocol.context


# ---------------------------------------------------------------- scoring


def score(
    model,
    stream: TokenStream,
    protocol: Protocol,
    *,
    batch_size: int = 0,
    max_tokens: int | None = None,
    progress: bool = False,
    label: str = "",
) -> dict:
    """Score the stream by the protocol and return the `evaluate` metric's result (perplexity, bits per
    byte, byte and word perplexity, token/byte/word counts) with the protocol and the time taken.

    `model` is a GPT-2 LM, or a peft model around one (its active adapter is used). `batch_size` 0 picks
    one from the context; on CUDA, a batch that runs out of memory is split and later batches shrink.
    """
    import evaluate
    from tqdm.auto import tqdm

    todo = windows(len(stream.ids), protocol, max_tokens)
    if not todo:
        raise ToolkitError(
            f"the text has {len(stream.ids)} tokens, fewer than one window of {protocol.context}; "
            "add text or lower --context"
        )
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = lm.get_output_embeddings().weight.device
    if batch_size <= 0:
        budget = CUDA_TOKENS_PER_BATCH if device.type == "cuda" else CPU_TOKENS_PER_BATCH
        batch_size = max(1, budget // protocol.context)
    metric = evaluate.load(str(METRIC_PATH), "text", keep_in_memory=True)
    byte_sums = np.concatenate([[0], np.cumsum(stream.nbytes)])
    word_sums = np.concatenate([[0], np.cumsum(stream.words)])
    total = sum(w.hi - w.lo for w in todo)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with tqdm(total=total, unit="tok", unit_scale=True, desc=label, disable=not progress, leave=False) as bar:
            queue = collections.deque(_batches(todo, batch_size))
            while queue:
                batch = queue.popleft()
                try:
                    nll = _score_windows(lm, stream.ids, batch, device)
                except torch.OutOfMemoryError:
                    if len(batch) == 1:
                        raise ToolkitError(
                            f"one window of {protocol.context} tokens does not fit in GPU memory; lower --context"
                        ) from None
                    torch.cuda.empty_cache()
                    batch_size = len(batch) // 2
                    log.info("out of memory: batches of %d windows from here on", batch_size)
                    # Re-plan everything not yet scored at the smaller size, not just this batch.
                    queue = collections.deque(_batches([*batch, *itertools.chain.from_iterable(queue)], batch_size))
                    continue
                metric.add_batch(
                    nll=nll.tolist(),
                    tokens=[w.hi - w.lo for w in batch],
                    bytes=[int(byte_sums[w.hi] - byte_sums[w.lo]) for w in batch],
                    words=[int(word_sums[w.hi] - word_sums[w.lo]) for w in batch],
                )
                bar.update(sum(w.hi - w.lo for w in batch))
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    result = metric.compute()
    return {
        "protocol": protocol.as_dict(),
        **result,
        "documents": stream.documents,
        "seconds": seconds,
        "tokens_per_second": result["tokens"] / seconds if seconds > 0 else 0.0,
    }


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
def _score_windows(lm, ids: np.ndarray, batch: list[Window], device) -> torch.Tensor:
    """Per window: the summed NLL (float64) of its scored tokens, each given the window's tokens before it.

    Runs the transformer, then the output layer only where a prediction is scored (the logits of all
    positions of a batch would be most of the memory)."""
    first, last = batch[0].lo - batch[0].start, batch[0].hi - batch[0].start
    inputs = torch.from_numpy(np.stack([ids[w.start : w.hi] for w in batch])).to(device)
    hidden = lm.transformer(input_ids=inputs, use_cache=False).last_hidden_state
    head = lm.get_output_embeddings()
    # The prediction of position p comes from the hidden state at p - 1.
    hidden = hidden[:, first - 1 : last - 1].reshape(-1, hidden.shape[-1])
    targets = inputs[:, first:last].reshape(-1)
    nll = torch.empty(len(targets), dtype=torch.float64)
    for at in range(0, len(targets), HEAD_ROWS):
        logits = head(hidden[at : at + HEAD_ROWS].to(head.weight.dtype)).float()
        nll[at : at + HEAD_ROWS] = F.cross_entropy(logits, targets[at : at + HEAD_ROWS], reduction="none").double().cpu()
    return nll.view(len(batch), -1).sum(dim=1)
