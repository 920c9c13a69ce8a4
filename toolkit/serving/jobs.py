"""What travels between the event loop and the batcher's worker: a request's rows (a Job), and what comes
back for it (Update events per row, or one Failure)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

from .catalog import Target
from .errors import ServingError
from .sampling import Sampling


@dataclass(frozen=True)
class RowSpec:
    """What one row of a request asks for."""

    index: int  # its choice's index in the response
    prompt: list[int]  # token ids
    max_tokens: int
    sampling: Sampling
    logprobs: int | None = None  # top tokens to report per position; None: no log-probabilities
    echo: bool = False  # report the prompt's tokens too (their log-probabilities, with logprobs)
    stops: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenInfo:
    """One token of a row with its log-probability, for `logprobs`."""

    token: str
    logprob: float | None  # None: a prompt's first token, which nothing predicts
    top: dict[str, float] | None
    offset: int  # where its text starts: in the prompt for prompt tokens, else in the completion
    prompt: bool = False


@dataclass(frozen=True)
class Update:
    """What one row produced since the last update; `finish_reason` set on its last."""

    index: int
    text: str = ""
    tokens: tuple[TokenInfo, ...] = ()
    finish_reason: str | None = None  # "stop" (EOS or a stop sequence) or "length"
    completion_tokens: int = 0  # generated so far, EOS included


@dataclass(frozen=True)
class Failure:
    error: ServingError


class Job:
    """A request's rows on their way through the batcher, and the queue its events come back on."""

    def __init__(self, target: Target, rows: list[RowSpec], timeout: float, streamed: bool = False):
        self.target, self.rows = target, rows
        self.streamed = streamed  # its text is sent as it comes; otherwise each row's once, when it ends
        self.created = time.monotonic()
        self.deadline = self.created + timeout
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = False  # set by the event loop when the client leaves
        # The worker's own state:
        self.waiting: deque[RowSpec] = deque(rows)  # rows not yet admitted
        self.peft_name: str | None = None  # what the registry lent it, until release
        self.live = 0  # rows admitted and not ended
        self.over = False
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled = True

    def send(self, *events) -> None:
        try:
            self.loop.call_soon_threadsafe(lambda: [self.events.put_nowait(e) for e in events])
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass
