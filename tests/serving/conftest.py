"""Fixtures of the serving tests: stores of adapters made in seconds, on the tiny model and on a variant of
it with a long context (for generations long enough to interrupt). Helpers live in servers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from .servers import add_adapter

from toolkit.sources import builtin

MANY = 16  # adapters in the `many_adapters` store


@pytest.fixture(scope="session")
def many_adapters(tmp_path_factory, tiny_model) -> Path:
    """A store of MANY random adapters, a00 ... a15, on the tiny model."""
    root = tmp_path_factory.mktemp("many-adapters") / "store"
    for i in range(MANY):
        add_adapter(root, tiny_model, f"a{i:02d}", seed=i)
    return root


@pytest.fixture(scope="session")
def long_model(tmp_path_factory, corpus_dir) -> Path:
    """The tiny model with a context of 1,024 positions: generations long enough to interrupt."""
    folder = tmp_path_factory.mktemp("long-gpt2")
    builtin.write_gpt2(folder, [corpus_dir / "train.txt"], vocab_size=300, n_positions=1024, n_embd=32, n_layer=2,
                       n_head=2)
    return folder


@pytest.fixture(scope="session")
def long_store(tmp_path_factory, long_model) -> Path:
    root = tmp_path_factory.mktemp("long-adapters") / "store"
    for i in range(2):
        add_adapter(root, long_model, f"l{i}", seed=100 + i)
    return root


