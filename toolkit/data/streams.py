"""Text to one token stream for scoring, with what each token stands for in the original text.

The stream is EOS, then each document (a non-blank row of the text column, tokenized alone) followed by
EOS: the leading EOS is context only, so that the first token of the text is scored given EOS (the
documents' own EOS tokens are scored like any other). Every token carries the UTF-8 bytes and the words
of the original text that it stands for; summed over the scored tokens they are the `bytes` and `words`
that bits per byte and word perplexity divide by. Two ways of counting:

- the stream (the default): a token's bytes are those it is written with; a word (a run of
  non-whitespace, as `str.split()` finds them) counts in the token holding its first byte; each
  document's EOS stands for one byte and one word (the newline that ends its line, the `<eos>` of
  WikiText's word-level perplexity).
- by document (`by_document`, as lm-evaluation-harness counts each document it scores on its own): the
  same bytes, the EOS after a document stands for nothing (it is never scored), and words are the pieces
  of `re.split(r"\\s+", document)`: the runs of non-whitespace plus one for whitespace at the document's
  start and one for whitespace at its end (the first and last token count those).

With a detokenizer (`detokenize`), the scored text is the document rewritten, which no longer maps onto
the original byte for byte: the original's bytes and words (counted as above) are all carried by the
first token of the document.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from .documents import document_batches

EOS_BYTES = 1  # in the stream, a document's end is the newline that ends its line in a text file
EOS_WORDS = 1  # ... and a word, as <eos> is in WikiText's word-level perplexity
_WORD = re.compile(r"\S+")  # the words of str.split()


@dataclass(frozen=True)
class TokenStream:
    ids: np.ndarray  # token ids: EOS, then each document followed by EOS
    nbytes: np.ndarray  # per token: UTF-8 bytes of the original text it stands for
    words: np.ndarray  # per token: words of the original text counted in it
    starts: np.ndarray  # position of each document's first token
    by_document: bool = False  # counted for scoring each document on its own (see the module's docstring)
    # Prompt/completion examples (toolkit.data.examples.example_stream): per token, whether it is scored (its
    # bytes and words are 0 where not); None for a text, every token of which is scored.
    scored: np.ndarray | None = None

    @property
    def documents(self) -> int:
        return len(self.starts)

    @property
    def tokens(self) -> int:
        """Tokens of the text, each scored once: all but the leading EOS; by document, not the EOS after each;
        of examples, their completions and the EOS after each."""
        if self.scored is not None:
            return int(self.scored.sum())
        return len(self.ids) - 1 - (self.documents if self.by_document else 0)

    def ends(self) -> np.ndarray:
        """Position of the EOS after each document."""
        return np.append(self.starts[1:] - 1, len(self.ids) - 1)

    def save(self, path: Path) -> None:
        extra = {} if self.scored is None else {"scored": self.scored}
        np.savez(
            path,
            ids=self.ids,
            nbytes=self.nbytes,
            words=self.words,
            starts=self.starts,
            by_document=self.by_document,
            **extra,
        )

    @classmethod
    def load(cls, path: Path) -> TokenStream:
        with np.load(path) as saved:
            scored = saved["scored"] if "scored" in saved.files else None
            return cls(
                saved["ids"], saved["nbytes"], saved["words"], saved["starts"], bool(saved["by_document"]), scored
            )


def token_stream(
    documents,
    text_column: str,
    tokenizer,
    limit: int | None = None,
    *,
    max_documents: int | None = None,
    by_document: bool = False,
    detokenize: Callable[[str], str] | None = None,
) -> TokenStream:
    """Tokenize documents (blank rows skipped) into one stream, EOS first and after each, with per-token
    byte and word counts; stop after the document that brings the tokens to score to `limit`, or after
    `max_documents` documents (the whole text when None). `by_document` counts as the harness does;
    `detokenize` rewrites each document first."""
    eos = tokenizer.eos_token_id
    if not tokenizer.is_fast or eos is None:
        raise ToolkitError("the tokenizer must be a fast GPT-2 tokenizer with an EOS token")
    table = token_byte_lengths(tokenizer)
    eos_bytes, eos_words = ([0], [0]) if by_document else ([EOS_BYTES], [EOS_WORDS])  # the EOS after a document
    ids, nbytes, words, starts, length, scored = [[eos]], [[0]], [[0]], [], 1, 0
    for text, doc_ids in _tokenized(documents, text_column, tokenizer, detokenize):
        doc_ids = np.asarray(doc_ids, dtype=np.int64)
        if detokenize:
            doc_bytes, doc_words = np.zeros_like(doc_ids), np.zeros_like(doc_ids)
            doc_bytes[0], doc_words[0] = len(text.encode()), count_words(text, by_document)
        else:
            doc_bytes = table[doc_ids]
            doc_words = word_starts(text, doc_bytes, edges=by_document)
        ids += [doc_ids, [eos]]
        nbytes += [doc_bytes, eos_bytes]
        words += [doc_words, eos_words]
        starts.append(length)
        length += len(doc_ids) + 1
        scored += len(doc_ids) + (0 if by_document else 1)
        if limit is not None and scored >= limit or max_documents is not None and len(starts) >= max_documents:
            break
    if not starts:
        raise ToolkitError("the text has no document that is not blank; nothing to score")
    return TokenStream(
        ids=np.concatenate(ids).astype(np.int64),
        nbytes=np.concatenate(nbytes).astype(np.int64),
        words=np.concatenate(words).astype(np.int64),
        starts=np.asarray(starts, dtype=np.int64),
        by_document=by_document,
    )


def _tokenized(documents, text_column: str, tokenizer, detokenize):
    """(original text, the tokens of the text as scored) per non-blank document, tokenized in batches."""
    for texts in document_batches(documents, text_column):
        scored = [detokenize(t) for t in texts] if detokenize else texts
        encoded = tokenizer(scored, add_special_tokens=False, return_attention_mask=False, verbose=False)
        yield from zip(texts, encoded["input_ids"])


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 bytes per token id. A byte-level BPE token is written with one character per byte; an added
    token (such as <|endoftext|> met inside a text) stands for its own text."""
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return np.asarray(
        [len(added[i].encode()) if i in added else len(piece or "") for i, piece in enumerate(pieces)],
        dtype=np.int64,
    )


def count_words(text: str, by_document: bool = False) -> int:
    r"""The words of a document: `str.split()`'s; by document, the pieces of `re.split(r"\s+", text)`."""
    words = len(text.split())
    return words + (text[:1].isspace() + text[-1:].isspace() if by_document else 0)


def word_starts(text: str, token_bytes: np.ndarray, edges: bool = False) -> np.ndarray:
    r"""Per token of `text`: how many words (runs of non-whitespace) begin in its bytes; with `edges`, one
    more in the first token when the text starts with whitespace and in the last when it ends with it
    (the empty first and last pieces of `re.split(r"\s+", text)`)."""
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
    counts = np.bincount(token_of, minlength=len(token_bytes))
    if edges:
        counts[0] += text[:1].isspace()
        counts[-1] += text[-1:].isspace()
    return counts
