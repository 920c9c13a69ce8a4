"""What the server counts, in Prometheus' text format (GET /metrics), through prometheus_client.

Each app has its own collector registry, so that several apps in one process (tests, mounted apps) do not
share counts. Models are labelled by name; every mix by "mix" (its weights are the client's, unbounded).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gpt2_adapt_requests",
            "HTTP requests answered, by route, model and status",
            ["route", "model", "status"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "gpt2_adapt_prompt_tokens", "Prompt tokens of admitted rows", ["model"], registry=r
        )
        self.generated_tokens = Counter("gpt2_adapt_generated_tokens", "Tokens generated", ["model"], registry=r)
        self.stopped_rows = Counter(
            "gpt2_adapt_stopped_rows",
            "Rows stopped before their end: the client left (cancelled), the timeout, or shutdown",
            ["reason"],
            registry=r,
        )
        self.queue_rows = Gauge("gpt2_adapt_queue_rows", "Rows waiting for a place in the batch", registry=r)
        self.running_rows = Gauge("gpt2_adapt_running_rows", "Rows generating now", registry=r)
        self.loaded_adapters = Gauge("gpt2_adapt_loaded_adapters", "Adapters and mixes loaded on the base", registry=r)
        self.batch_rows = Histogram(
            "gpt2_adapt_batch_rows", "Rows in each decoding step's forward pass", buckets=ROW_BUCKETS, registry=r
        )
        self.request_seconds = Histogram(
            "gpt2_adapt_request_seconds",
            "From a completion request to its last token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token_seconds = Histogram(
            "gpt2_adapt_first_token_seconds",
            "From a completion request to its first token",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
