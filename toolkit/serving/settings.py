"""What the command line (or `toolkit.serve`) sets for the server, checked once, without torch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..config.fields import setting
from ..errors import ToolkitError, param
from ..modeling.precision import LOAD_PRECISIONS

API_KEY_ENV = "GPT2_ADAPT_API_KEY"


@dataclass(frozen=True)
class ServerSettings:
    """Every setting of `gpt2-adapt serve`; its options are derived from these fields."""

    store: str | None = setting(None, "Adapter store folder [default: $GPT2_ADAPT_STORE, else ./adapters].")
    base: str | None = setting(
        None,
        "A local copy of the adapters' base (hub id or folder) [default: the one the store's adapters record].",
        metavar="ID_OR_DIR",
    )
    host: str = setting("127.0.0.1", "Address to listen on (0.0.0.0: every interface).")
    port: int = setting(8000, "Port to listen on.")
    api_key: str | None = setting(
        None,
        "Require `Authorization: Bearer KEY` on every route but /health (and serve no API docs).",
        envvar=API_KEY_ENV,
        show_envvar=True,
    )
    max_loaded: int = setting(16, "Adapters (and mixes) kept in memory; the least recently used is unloaded first.")
    max_batch: int = setting(16, "Sequences generated together in one forward pass.")
    max_queue: int = setting(64, "Sequences waiting for a place in the batch; beyond it requests get 429.")
    timeout: float = setting(
        300.0, "Seconds a request may take, queueing included; then its generation is stopped (408)."
    )
    precision: str = setting("fp32", "Load the base in this precision (int8, nf4, fp4: bitsandbytes 8-bit or 4-bit).")
    preload: tuple[str, ...] = setting((), "Load (and verify) this adapter at start-up (repeatable).", metavar="NAME")
    grace: float = setting(
        30.0, "Seconds SIGTERM or Ctrl-C waits for the requests in flight; shortly before it ends, those left get 503."
    )
    max_body: int = setting(1 << 20, "Bytes a request's body may have; beyond it the request gets 413.")
    read_timeout: float = setting(
        15.0,
        "Seconds a client may take to send a request's headers (then the connection "
        "is closed), and again its body (then 408).",
    )
    threads: int = setting(0, "CPU threads the model computes with; 0: chosen from the cores and their load at start.")

    def __post_init__(self):
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            object.__setattr__(self, "api_key", os.environ[API_KEY_ENV])
        object.__setattr__(self, "preload", tuple(self.preload))
        problems = []
        for name in ("max_loaded", "max_batch", "max_queue", "max_body"):
            if getattr(self, name) < 1:
                problems.append(f"{param(name)}: must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.port < 65536:
            problems.append(f"{param('port')}: must be between 1 and 65535 (got {self.port})")
        if self.threads < 0:
            problems.append(
                f"{param('threads')}: must be >= 0, 0 choosing from the machine's load (got {self.threads})"
            )
        for name in ("timeout", "grace", "read_timeout"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"{param(name)}: must be a number of seconds > 0 (got {value})")
        if self.precision not in LOAD_PRECISIONS:
            problems.append(
                f"{param('precision')}: must be one of {', '.join(LOAD_PRECISIONS)} (got {self.precision!r})"
            )
        if self.api_key is not None and not self.api_key.strip():
            problems.append(f"{param('api_key')}: is empty; give a key, or none to leave the server open")
        if len(self.preload) > self.max_loaded:
            problems.append(
                f"{param('preload')}: {len(self.preload)} adapters, more than {param('max_loaded')} "
                f"({self.max_loaded}) can keep; preload fewer or raise the limit"
            )
        if problems:
            raise ToolkitError(*problems)
