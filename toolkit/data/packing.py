"""Training data: tokenize a recipe's documents, or its prompt/completion examples, and pack them into blocks.

Text: every document is followed by EOS, the token stream is cut into blocks of `block_size` and only the
final remainder is dropped. Labels equal the inputs (the model shifts them), so EOS is learnt like any token.

Examples (`data.format = "prompt_completion"`, see `toolkit.data.examples`): several whole examples share a
block, placed best-fit decreasing (the longest first, each into the fullest block it fits), and what is left
of a block is padding. Each token carries its position within its own example: where the positions restart
at 0, transformers' attention mask starts a new sequence (a block-diagonal mask), so an example sees only
its own tokens, exactly as if it were alone. Labels are -100 (not learnt) on the prompt, unless
`train_on_prompt`, and on the padding. The evaluation examples are not packed: they become a token stream
in which each is scored on its own, its completion only (`toolkit.data.examples.example_stream`).

The packed blocks are cached as .npy files under a fingerprint of everything that decides their content:
the data itself, the tokenizer's full definition, the block size, the format and how evaluation is carved out.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..config.recipe import DataSpec
from ..errors import ToolkitError
from ..files import atomic_folder, writable_cache
from ..modeling.fingerprints import tokenizer_fingerprint
from ..modeling.head_loss import IGNORE_INDEX
from .documents import DocumentSource, document_batches, open_source
from .examples import Example, encode_examples, example_stream
from .streams import TokenStream, token_stream

log = logging.getLogger(__name__)

# Bump when the packing rules change, so that caches written by older rules are never reused.
PACKING_VERSION = "4"  # 4: prompt/completion examples; 3: the evaluation stream starts with EOS


def _row(array: np.ndarray, dtype) -> torch.Tensor:
    """A row of a (memory-mapped, read-only) array as a tensor of its own: torch.from_numpy would share the
    read-only memory, which torch warns about (NumPy's "array is not writable") whenever no conversion copies it."""
    return torch.tensor(np.asarray(array, dtype=dtype))


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks, one training example each: {"input_ids", "labels"} of block_size tokens."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = _row(self.blocks[index], np.int64)
        return {"input_ids": ids, "labels": ids}

    @property
    def block_size(self) -> int:
        return self.blocks.shape[1]

    @property
    def tokens(self) -> int:
        return self.blocks.size


class ExampleBlocks(torch.utils.data.Dataset):
    """Packed examples, one training example per block: {"input_ids", "labels", "position_ids"} of block_size
    tokens, labels IGNORE_INDEX where nothing is learnt."""

    def __init__(self, ids: np.ndarray, learnt: np.ndarray, positions: np.ndarray):
        self.ids, self.learnt, self.positions = ids, learnt, positions

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = _row(self.ids[index], np.int64)
        learnt = _row(self.learnt[index], bool)
        return {
            "input_ids": ids,
            "labels": torch.where(learnt, ids, IGNORE_INDEX),
            "position_ids": _row(self.positions[index], np.int64),
        }

    @property
    def block_size(self) -> int:
        return self.ids.shape[1]

    @property
    def tokens(self) -> int:
        return self.ids.size


@dataclass(frozen=True)
class Packing:
    """Where an example goes: per block, the indices of its examples in order; and what is left empty."""

    blocks: list[list[int]]
    block_size: int
    tokens: int  # of the examples

    @property
    def padding(self) -> float:
        """Share of the blocks' positions that hold no example's token."""
        positions = len(self.blocks) * self.block_size
        return 1 - self.tokens / positions if positions else 0.0


def fit_blocks(lengths: Sequence[int], block_size: int) -> Packing:
    """Best-fit decreasing: the longest example first, each into the block with the least room that still
    holds it (a new block when none does). It packs at least as tightly as first-fit decreasing on
    ordinary data, and its order is fixed (ties go to the lower index)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    blocks: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # (room left, block), sorted: the first that is >= a length fits best
    for i in order:
        at = bisect.bisect_left(rooms, (lengths[i], -1))
        if at == len(rooms):
            blocks.append([])
            room, block = block_size, len(blocks) - 1
        else:
            room, block = rooms.pop(at)
        blocks[block].append(i)
        if room - lengths[i] > 0:
            bisect.insort(rooms, (room - lengths[i], block))
    return Packing(blocks, block_size, int(sum(lengths)))


def example_arrays(examples: list[Example], packing: Packing, prompt_too: bool = False) -> dict[str, np.ndarray]:
    """The packed blocks as arrays [blocks, block_size]: ids (EOS as padding), scored (the completions, or
    with `prompt_too` everything but each example's leading EOS), positions (from 0 in each example, and
    in the padding after them, which is a sequence of its own), nbytes and words (zero where not scored)."""
    shape = (len(packing.blocks), packing.block_size)
    eos = examples[0].ids[0] if examples else 0  # every example starts with EOS; it pads too
    out = {
        "ids": np.zeros(shape, np.int32),
        "scored": np.zeros(shape, bool),
        "positions": np.zeros(shape, np.int32),
        "nbytes": np.zeros(shape, np.int32),
        "words": np.zeros(shape, np.int32),
    }
    for b, members in enumerate(packing.blocks):
        at = 0
        for example in (examples[i] for i in members):
            span = slice(at, at + len(example))
            scored = example.scored(prompt_too)
            out["ids"][b, span] = example.ids
            out["scored"][b, span] = scored
            out["positions"][b, span] = np.arange(len(example))
            out["nbytes"][b, span] = np.where(scored, example.nbytes, 0)
            out["words"][b, span] = np.where(scored, example.words, 0)
            at += len(example)
        out["ids"][b, at:] = eos  # padding: after the examples, so none of them sees it
        out["positions"][b, at:] = np.arange(packing.block_size - at)
    return out


@dataclass(frozen=True)
class PreparedData:
    train: BlockDataset | ExampleBlocks
    eval: TokenStream  # the evaluation text (or examples), scored by toolkit.evaluation as `gpt2-adapt eval` scores it
    fingerprint: str  # of the packed result: equal fingerprints mean identical blocks and evaluation text
    stats: dict  # per split: documents (or examples), tokens (eval: those scored); train: blocks, dropped
    #              (text: remainder tokens), and of examples padding (share of empty positions), scored, truncated
    source: DocumentSource  # where the documents came from

    @property
    def train_documents(self) -> int:
        return self.stats["train"]["documents"]

    @property
    def padding(self) -> float:
        """Share of the training blocks' positions that hold no token (0 for text)."""
        return self.stats["train"].get("padding", 0.0)


def prepare_data(spec: DataSpec, tokenizer, cache=None) -> PreparedData:
    """Packed training blocks and the evaluation token stream of a recipe's data section, from the cache
    when it has them."""
    if not tokenizer.is_fast or tokenizer.eos_token_id is None:
        raise ToolkitError("model.name: the tokenizer must be a fast GPT-2 tokenizer with an EOS token")
    source = open_source(spec)
    key = _fingerprint(spec, tokenizer, source.fingerprint)
    folder = (cache or writable_cache()) / "packed" / key
    if not (folder / "meta.json").is_file():
        train_docs, eval_docs = source.splits()
        pack_split = _pack_examples if spec.examples else _pack_text
        arrays, stream, stats = pack_split(spec, tokenizer, train_docs, eval_docs)
        with atomic_folder(folder) as tmp:
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
            stream.save(tmp / "eval.npz")
            (tmp / "meta.json").write_text(json.dumps(stats, indent=2))
    else:
        log.info("packed data found in the cache: %s", folder)
    if spec.examples:
        train = ExampleBlocks(
            *(np.load(folder / f"train_{name}.npy", mmap_mode="r") for name in ("ids", "learnt", "positions"))
        )
    else:
        train = BlockDataset(np.load(folder / "train.npy", mmap_mode="r"))
    return PreparedData(
        train=train,
        eval=TokenStream.load(folder / "eval.npz"),
        fingerprint=key,
        stats=json.loads((folder / "meta.json").read_text()),
        source=source,
    )


def _pack_text(spec: DataSpec, tokenizer, train_docs, eval_docs):
    blocks, train_stats = pack(train_docs, spec.text_column, tokenizer, spec.block_size)
    if len(blocks) == 0:
        raise ToolkitError(
            f"{_where(spec, 'train')}: the training text has {train_stats['tokens']} tokens, fewer than one block of "
            f"data.block_size={spec.block_size}; add text or lower data.block_size"
        )
    stream = token_stream(eval_docs, spec.text_column, tokenizer)  # any length: every token of it is scored
    return (
        {"train": blocks},
        stream,
        {"train": train_stats, "eval": {"documents": stream.documents, "tokens": stream.tokens}},
    )


def _pack_examples(spec: DataSpec, tokenizer, train_docs, eval_docs):
    train = encode_examples(train_docs, spec, tokenizer, _where(spec, "train"))
    evals = encode_examples(eval_docs, spec, tokenizer, _where(spec, "eval"))
    packing = fit_blocks([len(e) for e in train], spec.block_size)
    arrays = example_arrays(train, packing, prompt_too=spec.train_on_prompt)
    stream = example_stream(evals)  # each scored on its own, as training's evaluation and `eval` score it
    stats = {
        "train": _example_stats(train, packing, int(arrays["scored"].sum())),
        "eval": {"documents": len(evals), "tokens": stream.tokens},
    }
    log.info(
        "%s training examples in %s blocks of %d: %.1f%% padding",
        f"{len(train):,}",
        f"{len(packing.blocks):,}",
        spec.block_size,
        100 * packing.padding,
    )
    saved = {"train_ids": arrays["ids"], "train_learnt": arrays["scored"], "train_positions": arrays["positions"]}
    return saved, stream, stats


def _example_stats(examples: list[Example], packing: Packing, scored: int) -> dict:
    return {
        "documents": len(examples),
        "tokens": packing.tokens,
        "blocks": len(packing.blocks),
        "dropped": 0,
        "padding": packing.padding,
        "scored": scored,
        "truncated": sum(e.truncated > 0 for e in examples),
    }


def _where(spec: DataSpec, split: str) -> str:
    """The recipe key that names a split's source."""
    if split == "eval" and spec.eval_files:
        return "data.eval_files"
    return "data.train_files" if spec.train_files else "data.dataset"


def pack(documents, text_column: str, tokenizer, block_size: int) -> tuple[np.ndarray, dict]:
    """Tokenize documents in batches, append EOS to each, and cut the stream into full blocks."""
    eos = tokenizer.eos_token_id
    pieces, documents_seen = [], 0
    for texts in document_batches(documents, text_column):
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for ids in encoded["input_ids"]:
            pieces.append(np.asarray(ids + [eos], dtype=np.int32))
        documents_seen += len(texts)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    n_blocks = len(stream) // block_size
    blocks = stream[: n_blocks * block_size].reshape(n_blocks, block_size)
    stats = {
        "documents": documents_seen,
        "tokens": len(stream),
        "blocks": int(n_blocks),
        "dropped": int(len(stream) - n_blocks * block_size),
    }
    return blocks, stats


# The data keys that decide the examples' tokens (text_column decides the text's).
EXAMPLE_KEYS = ("prompt_column", "completion_column", "template", "train_on_prompt", "truncate")


def _fingerprint(spec: DataSpec, tokenizer, source_fingerprint: str) -> str:
    what_matters = {
        "packing": PACKING_VERSION,
        "source": source_fingerprint,
        "train_split": spec.train_split,
        "block_size": spec.block_size,
        "eval_fraction": spec.eval_fraction,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "eos": tokenizer.eos_token_id,
        "format": spec.format,
    }
    if spec.examples:
        what_matters |= {key: getattr(spec, key) for key in EXAMPLE_KEYS}
    else:
        what_matters["text_column"] = spec.text_column
    return hashlib.sha256(json.dumps(what_matters, sort_keys=True).encode()).hexdigest()[:32]
