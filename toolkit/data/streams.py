"""Text to one token stream for scoring, with what each token stands for in the original text.

Each document (a non-blank row of the text column) is tokenized alone and followed by EOS, and the
documents are concatenated in order, as training reads them. Every token carries the UTF-8 bytes of the
text it stands for (EOS: 1, the newline that ends a document's line) and the number of words that begin in
it (EOS: 1, the end of the document, counted as a word as in WikiText's word-level convention); a word is a
run of non-whitespace (`str.split()`). Summed over scored tokens, they are the `bytes` and `words` that bits
per byte and word perplexity divide by.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from .documents import document_batches

EOS_BYTES = 1  # a document's end is the newline that ends its line in a text file
EOS_WORDS = 1  # ... and a word, as <eos> is in WikiText's word-level perplexity
_WORD = re.compile(r"\S+")  # the words of str.split()


@dataclass(frozen=True)
class TokenStream:
    ids: np.ndarray  # token ids, EOS after each document
    nbytes: np.ndarray  # per token: UTF-8 bytes of the text it stands for
    words: np.ndarray  # per token: words that begin in it
    starts: np.ndarray  # stream position where each document begins
    # Packed prompt/completion examples (toolkit.data.packing.example_stream); None for a plain text:
    positions: np.ndarray | None = None  # per token: its position in its own example (attention restarts at 0)
    scored: np.ndarray | None = None  # per token: whether it is scored (its bytes and words are 0 where not)

    @property
    def documents(self) -> int:
        return len(self.starts)

    def save(self, path: Path) -> None:
        extra = {} if self.positions is None else {"positions": self.positions, "scored": self.scored}
        np.savez(path, ids=self.ids, nbytes=self.nbytes, words=self.words, starts=self.starts, **extra)

    @classmethod
    def load(cls, path: Path) -> TokenStream:
        with np.load(path) as saved:
            extra = {k: saved[k] for k in ("positions", "scored") if k in saved.files}
            return cls(saved["ids"], saved["nbytes"], saved["words"], saved["starts"], **extra)


def token_stream(documents, text_column: str, tokenizer, limit: int | None = None) -> TokenStream:
    """Tokenize documents (blank rows skipped) into one stream with EOS after each, with per-token byte
    and word counts; stop once the stream holds `limit` tokens (the whole text when None)."""
    eos = tokenizer.eos_token_id
    if not tokenizer.is_fast or eos is None:
        raise ToolkitError("the tokenizer must be a fast GPT-2 tokenizer with an EOS token")
    table = token_byte_lengths(tokenizer)
    ids, nbytes, words, starts, length = [], [], [], [], 0
    for texts in document_batches(documents, text_column):
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for text, doc_ids in zip(texts, encoded["input_ids"]):
            doc_ids = np.asarray(doc_ids, dtype=np.int64)
            doc_bytes = table[doc_ids]
            ids += [doc_ids, [eos]]
            nbytes += [doc_bytes, [EOS_BYTES]]
            words += [word_starts(text, doc_bytes), [EOS_WORDS]]
            starts.append(length)
            length += len(doc_ids) + 1
            if limit is not None and length >= limit:
                break
        if limit is not None and length >= limit:
            break
    if not starts:
        raise ToolkitError("the text has no document that is not blank; nothing to score")
    return TokenStream(
        ids=np.concatenate(ids).astype(np.int64),
        nbytes=np.concatenate(nbytes).astype(np.int64),
        words=np.concatenate(words).astype(np.int64),
        starts=np.asarray(starts, dtype=np.int64),
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

