"""The Hugging Face Hub: whether it can be reached, probed once with a short timeout.

When it cannot, a name that is not in the local cache fails in seconds with a message naming the fix,
instead of after the libraries' 20-60 s of retries.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def dataset_cached(name: str) -> bool:
    import datasets

    return (Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")).is_dir()
