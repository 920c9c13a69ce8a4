"""How a token stream is cut into windows for scoring: the protocol that every result states.

Every token of the text is scored exactly once, as lm-evaluation-harness's rolling windows score a
document (`loglikelihood_rolling`). The stream begins with EOS (context only); a window of C positions
predicts the next token at each of them, so the first window, [EOS, t1 .. t(C-1)], scores t1 .. tC, the
first token given EOS alone. With stride S each later window starts S positions after the one before and
scores the S tokens it adds, each given the window's tokens before it: at least C - S + 1 of them
(S = C: disjoint windows, the harness's; S = 1: every token given all of its C tokens of context, the
first C given what there is). The last window is moved back to end at the text's last token, so that it
has a full window of context; the tokens it repeats are context only.

By document (`Protocol.by_document`), each document is such a text of its own: its windows start at the
EOS before it and never reach into the document before, and the EOS after it is not scored, as the
harness scores each document of a task.

Prompt/completion examples (`Protocol.examples`) are documents of their own in the same way, each in one
window from the EOS in front of it, and only its completion and the EOS after it are scored (the stream's
`scored` marks them): the prompt is context, as it is when the adapter is prompted.
"""

from __future__ import annotations

from typing import NamedTuple

from ..data.streams import TokenStream
from ..errors import ToolkitError, param
from ..records import Protocol


class Window(NamedTuple):
    start: int  # stream position of the window's first token
    lo: int  # first scored stream position
    hi: int  # one past the last scored position; the window's tokens are [start, hi - 1)


def check_protocol(protocol: Protocol, n_positions: int | None = None, model: str = "the model") -> None:
    """Refuse windows the protocol cannot make, or that the model cannot see at once."""
    if protocol.context < 1:
        raise ToolkitError(f"{param('context')}: must be at least 1 token (got {protocol.context})")
    if n_positions is not None and protocol.context > n_positions:
        raise ToolkitError(
            f"{param('context')}: {protocol.context} exceeds the context of {model} ({n_positions} tokens); "
            f"use at most {n_positions}"
        )
    if not 1 <= protocol.stride <= protocol.context:
        raise ToolkitError(
            f"{param('stride')}: must be between 1 and the context ({protocol.context} tokens), got "
            f"{protocol.stride}; a larger stride would skip tokens"
        )


def texts(stream: TokenStream, protocol: Protocol) -> list[tuple[int, int]]:
    """The stream's texts as [first, end) ranges: position `first` is the EOS in front (context only),
    first + 1 .. end - 1 are scored. The whole stream; or, by document, each document without its EOS;
    or each prompt/completion example with the EOS that ends it."""
    if protocol.examples:
        return [(int(start) - 1, int(end) + 1) for start, end in zip(stream.starts, stream.ends())]
    if protocol.by_document:
        return [(int(start) - 1, int(end)) for start, end in zip(stream.starts, stream.ends())]
    return [(0, len(stream.ids))]


def windows(stream: TokenStream, protocol: Protocol, max_tokens: int | None = None) -> list[Window]:
    """The windows over the stream and what each scores; with max_tokens, only the first max_tokens
    scored tokens (the last window cut short)."""
    out, left = [], max_tokens
    for first, end in texts(stream, protocol):
        for w in text_windows(first, end, protocol.context, protocol.stride):
            if left is not None and w.hi - w.lo >= left:
                out.append(Window(w.start, w.lo, w.lo + left))
                return out
            out.append(w)
            left = None if left is None else left - (w.hi - w.lo)
    return out


def text_windows(first: int, end: int, context: int, stride: int) -> list[Window]:
    """Windows of `context` positions over stream positions [first, end), every `stride`: each scores the
    positions it predicts that no window before it did; the last is moved back to end at `end` - 1."""
    out, start, done = [], first, first + 1  # done: the next position to score
    while done < end:
        hi = start + context + 1  # a window predicts the token after each of its positions
        if hi >= end:
            hi, start = end, max(first, end - context - 1)
        out.append(Window(start, done, hi))
        done, start = hi, start + stride
    return out


def tokens_needed(protocol: Protocol, max_tokens: int) -> int:
    """A stream length that surely holds the windows that score the first max_tokens tokens as they are in
    the whole text: the window holding the last of them ends within a window after it."""
    return max_tokens + protocol.context + 2
