"""Training data: tokenize a recipe's documents and pack them into blocks with no padding.

Every document is followed by EOS, the token stream is cut into blocks of `block_size` and only the final
remainder is dropped. Labels equal the inputs (the model shifts them), so EOS is learnt like any token.

The packed blocks are cached as .npy files under a fingerprint of everything that decides their content:
the data itself, the tokenizer's full definition, the block size and how evaluation is carved out.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..config.recipe import DataSpec
from ..errors import ToolkitError
from ..files import atomic_folder, writable_cache
from ..modeling.fingerprints import tokenizer_fingerprint
from .documents import DocumentSource, document_batches, open_source
from .streams import TokenStream, token_stream

log = logging.getLogger(__name__)

# Bump when the packing rules change, so that caches written by older rules are never reused.
PACKING_VERSION = "3"  # 3: the evaluation stream starts with EOS, and every token of it is scored


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks, one training example each: {"input_ids", "labels"} of block_size tokens."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
        return {"input_ids": ids, "labels": ids}

    @property
    def block_size(self) -> int:
        return self.blocks.shape[1]

    @property
    def tokens(self) -> int:
        return self.blocks.size


@dataclass(frozen=True)
class PreparedData:
    train: BlockDataset
    eval: TokenStream  # the evaluation text, scored by toolkit.evaluation as `gpt2-adapt eval` scores it
    fingerprint: str  # of the packed result: equal fingerprints mean identical blocks and evaluation text
    stats: dict  # train: documents, tokens, blocks, dropped (remainder tokens); eval: documents, tokens (all scored)
    source: DocumentSource  # where the documents came from

    @property
    def train_documents(self) -> int:
        return self.stats["train"]["documents"]


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
        blocks, train_stats = pack(train_docs, spec.text_column, tokenizer, spec.block_size)
        if len(blocks) == 0:
            where = "data.train_files" if spec.train_files else "data.dataset"
            raise ToolkitError(
                f"{where}: the training text has {train_stats['tokens']} tokens, fewer than one block of "
                f"data.block_size={spec.block_size}; add text or lower data.block_size"
            )
        stream = token_stream(eval_docs, spec.text_column, tokenizer)  # any length: every token of it is scored
        stats = {"train": train_stats, "eval": {"documents": stream.documents, "tokens": stream.tokens}}
        with atomic_folder(folder) as tmp:
            np.save(tmp / "train.npy", blocks)
            stream.save(tmp / "eval.npz")
            (tmp / "meta.json").write_text(json.dumps(stats, indent=2))
    else:
        log.info("packed data found in the cache: %s", folder)
    return PreparedData(
        train=BlockDataset(np.load(folder / "train.npy", mmap_mode="r")),
        eval=TokenStream.load(folder / "eval.npz"),
        fingerprint=key,
        stats=json.loads((folder / "meta.json").read_text()),
        source=source,
    )


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
        "tokens": int(len(stream)),
        "blocks": int(n_blocks),
        "dropped": int(len(stream) - n_blocks * block_size),
    }
    return blocks, stats


def _fingerprint(spec: DataSpec, tokenizer, source_fingerprint: str) -> str:
    what_matters = {
        "packing": PACKING_VERSION,
        "source": source_fingerprint,
        "train_split": spec.train_split,
        "text_column": spec.text_column,
        "block_size": spec.block_size,
        "eval_fraction": spec.eval_fraction,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "eos": tokenizer.eos_token_id,
    }
    return hashlib.sha256(json.dumps(what_matters, sort_keys=True).encode()).hexdigest()[:32]
