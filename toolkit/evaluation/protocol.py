"""How a token stream is cut into windows for scoring: the protocol that every result states.

Context C, stride S (1 <= S <= C): window k holds stream tokens [kS, kS + C). Only full windows are used,
so the tail of fewer than S tokens after the last one is not scored (as training drops its final partial
block). Window 0 scores its tokens 1 .. C-1; window k > 0 scores the tokens it adds beyond window k-1,
[(k-1)S + C, kS + C), except a token at its own first position, which has no context in the window (that
happens only when S = C). So every scored token is scored once, with at least C - S tokens of left context
(all of it, up to C - 1, for S = 1), and S = C gives disjoint blocks: training's evaluation.

Prompt/completion examples are packed into blocks of C (`toolkit.data.packing.example_stream`) and scored
by disjoint windows that are those blocks: each example sees only itself, and only its completion counts.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import ToolkitError, param
from ..records import Protocol


class Window(NamedTuple):
    start: int  # stream position of the window's first token
    lo: int  # first scored stream position
    hi: int  # one past the last scored position


def check_protocol(protocol: Protocol, n_positions: int | None = None, model: str = "the model") -> None:
    """Refuse windows the protocol cannot make, or that the model cannot see at once."""
    if protocol.context < 2:
        raise ToolkitError(f"{param('context')}: must be at least 2 tokens (got {protocol.context})")
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


def describe(protocol: Protocol) -> str:
    if protocol.examples:
        return f"each example on its own (packed in blocks of {protocol.context}), completion tokens only"
    if protocol.kind == "disjoint":
        return f"disjoint blocks of {protocol.context} tokens"
    return f"sliding window of {protocol.context} tokens, stride {protocol.stride}"


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
