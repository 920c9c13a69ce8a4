"""Everything a running server holds, opened at start-up and closed at shutdown: the base and its
tokenizers, the registry of adapters, the batcher's worker, the catalog, the completions and chat."""

from __future__ import annotations

import logging
import time

from ..config.names import is_valid_name
from ..errors import ToolkitError, param
from ..modeling.tokenizer import tokenizer_from
from ..sources.models import model_source
from ..store.loading import load
from ..store.store import AdapterStore
from ..threads import set_threads
from .batcher import Batcher
from .catalog import Catalog, choose_base
from .chat import Chat
from .completions import Completions
from .errors import ServingError
from .metrics import Metrics
from .registry import Registry
from .settings import ServerSettings

log = logging.getLogger(__name__)


class Service:
    def __init__(self, settings: ServerSettings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.store = AdapterStore(settings.store)
        self.opened = False
        self.catalog: Catalog | None = None
        self.batcher: Batcher | None = None
        self.completions: Completions | None = None
        self.chat: Chat | None = None

    def open(self) -> None:
        """Load the base once, preload adapters, start the worker. Blocking: run it off the event loop."""
        s = self.settings
        started = time.perf_counter()
        missing = [name for name in s.preload if not (is_valid_name(name) and self.store.exists(name))]
        if missing:
            raise ToolkitError(
                *(
                    f"{param('preload')}: no adapter named {name!r} in {self.store.root} "
                    f"(it has: {', '.join(self.store.names()) or 'none'})"
                    for name in missing
                )
            )
        set_threads("serving", s.threads)
        served = choose_base(self.store, s.base, s.preload)
        base = served.name
        model, tokenizer = load(base=base, revision=served.revision, store=self.store, precision=s.precision)
        source = model_source(base, served.revision, key=param("base"))
        registry = Registry(model, tokenizer, self.store, source, s.max_loaded)
        self.catalog = Catalog(self.store, base, int(time.time()))
        for name in s.preload:
            try:
                registry.release(registry.acquire(self.catalog.target(name)))
            except ServingError as err:
                raise ToolkitError(f"{param('preload')} {name}: {err.message}") from None
        # The worker decodes with the tokenizer it verifies adapters with; the event loop encodes with its
        # own, since a fast tokenizer must not encode in one thread while it decodes in another.
        self.batcher = Batcher(
            registry, tokenizer, self.metrics, max_batch=s.max_batch, max_queue=s.max_queue, timeout=s.timeout
        )
        config = model.config
        self.completions = Completions(
            self.catalog,
            self.batcher,
            tokenizer_from(source, base, key=param("base")),
            config.n_positions,
            config.vocab_size,
        )
        self.chat = Chat(self.completions)
        self.metrics.loaded_adapters.set(registry.loaded)
        self.batcher.start()
        self.opened = True
        log.info(
            "serving %s%s with %d adapter(s) preloaded, from %s (%.1f s)",
            base,
            "" if served.revision == "main" else f" at revision {served.revision}",
            len(s.preload),
            self.store.root,
            time.perf_counter() - started,
        )

    def drain(self, seconds: float) -> None:
        """Shutting down: new requests get 503, and in `seconds` so do those still in flight."""
        if self.batcher is not None:
            self.batcher.drain(seconds)

    def health(self) -> str | None:
        """Why the server cannot generate (None: it can)."""
        if self.batcher is None:
            return "the model is not loaded yet"
        if not self.batcher.alive:
            return self.batcher.failure or "the generation worker has stopped"
        return None

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        if self.completions is not None:
            self.completions.close()
