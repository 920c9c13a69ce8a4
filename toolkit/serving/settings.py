"""What the command line (or `toolkit.serve`) sets for the server, checked once, without torch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..config.recipe import LOAD_PRECISIONS
from ..errors import ToolkitError, param

API_KEY_ENV = "GPT2_ADAPT_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    store: str | None = None  # the adapter store folder; None: $GPT2_ADAPT_STORE, else ./adapters
    base: str | None = None  # the base (hub id or folder); None: the one the store's adapters record
    host: str = "127.0.0.1"  # the address to listen on; 0.0.0.0 exposes the server to the network
    port: int = 8000
    api_key: str | None = None  # required as `Authorization: Bearer KEY`; None: $GPT2_ADAPT_API_KEY, else open
    max_loaded: int = 16  # adapters (and mixes) kept in memory; the least recently used is unloaded first
    max_batch: int = 16  # rows (sequences) generated together in one forward pass
    max_queue: int = 64  # rows waiting for a place in the batch; beyond it a request gets 429
    timeout: float = 300.0  # seconds a request may take, queueing included; then its generation stops
    precision: str = "fp32"  # how the base is loaded: fp32, bf16, fp16 or int8
    preload: tuple[str, ...] = ()  # adapters loaded (and verified) at start-up rather than on first use
    grace: float = 30.0  # seconds SIGTERM or Ctrl-C waits for requests in flight before closing them
    threads: int = 0  # CPU threads the model computes with; 0: chosen from the cores and their load at start

    def __post_init__(self):
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            object.__setattr__(self, "api_key", os.environ[API_KEY_ENV])
        object.__setattr__(self, "preload", tuple(self.preload))
        problems = []
        for name in ("max_loaded", "max_batch", "max_queue"):
            if getattr(self, name) < 1:
                problems.append(f"{param(name)}: must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.port < 65536:
            problems.append(f"{param('port')}: must be between 1 and 65535 (got {self.port})")
        if self.threads < 0:
            problems.append(f"{param('threads')}: must be >= 0, 0 choosing from the machine's load (got {self.threads})")
        for name in ("timeout", "grace"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{param(name)}: must be a number of seconds > 0 (got {value})")
        if self.precision not in LOAD_PRECISIONS:
            problems.append(f"{param('precision')}: must be one of {', '.join(LOAD_PRECISIONS)} (got {self.precision!r})")
        if self.api_key is not None and not self.api_key.strip():
            problems.append(f"{param('api_key')}: is empty; give a key, or none to leave the server open")
        if len(self.preload) > self.max_loaded:
            problems.append(
                f"{param('preload')}: {len(self.preload)} adapters, more than {param('max_loaded')} "
                f"({self.max_loaded}) can keep; preload fewer or raise the limit"
            )
        if problems:
            raise ToolkitError(*problems)
