"""The toolkit's `evaluate` metric module (token-weighted perplexity from summed NLL), loaded offline.

`evaluate.load("perplexity")` needs the Hub, takes a model id rather than a model, and averages per-text
perplexities; this module keeps sums, so it aggregates exactly across batches and processes.
"""

from __future__ import annotations

from pathlib import Path

METRIC_PATH = Path(__file__).parent / "metrics" / "token_perplexity.py"


def load_metric(config: str = "text"):
    """The metric in its "default" (NLL and tokens) or "text" (bytes and words too) configuration."""
    import evaluate

    return evaluate.load(str(METRIC_PATH), config, keep_in_memory=True)
