"""Fixtures of the serving tests: stores of adapters made in seconds, on the tiny model and on a variant of
it with a long context (for generations long enough to interrupt), and a prompt/completion adapter trained
by `gpt2-adapt train`. Helpers live in servers.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner
from conftest import tiny_recipe

from toolkit.cli import main
from toolkit.sources import builtin

from .servers import QA_TEMPLATE, add_adapter, qa_rows

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
    builtin.write_gpt2(
        folder, [corpus_dir / "train.txt"], vocab_size=300, n_positions=1024, n_embd=32, n_layer=2, n_head=2
    )
    return folder


@pytest.fixture(scope="session")
def long_store(tmp_path_factory, long_model) -> Path:
    root = tmp_path_factory.mktemp("long-adapters") / "store"
    for i in range(2):
        add_adapter(root, long_model, f"l{i}", seed=100 + i)
    return root


@pytest.fixture(scope="session")
def qa_store(tmp_path_factory, tiny_model, corpus_dir) -> Path:
    """A store with `qa`, a prompt/completion adapter (template QA_TEMPLATE) trained by `gpt2-adapt train`,
    and `text`, a random adapter imported without a recipe (prompted with plain text)."""
    root = tmp_path_factory.mktemp("qa-adapters")
    files = {}
    for split, (n, seed) in {"train": (300, 1), "valid": (30, 2)}.items():
        files[split] = root / f"qa-{split}.jsonl"
        files[split].write_text("".join(json.dumps(row) + "\n" for row in qa_rows(n, seed)))
    recipe = tiny_recipe(
        tiny_model,
        corpus_dir,
        "qa",
        data={
            "train_files": [str(files["train"])],
            "eval_files": [str(files["valid"])],
            "block_size": 64,
            "format": "prompt_completion",
            "template": QA_TEMPLATE,
        },
        training={"max_steps": 40, "precision": "fp32", "base_dropout": False},
    )
    (root / "qa.toml").write_text(tomli_w.dumps(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT2_ADAPT_CACHE", str(root / "cache"))
        mp.chdir(root)
        result = CliRunner().invoke(
            main, ["train", str(root / "qa.toml"), "--store", str(root / "store")], catch_exceptions=False
        )
    assert result.exit_code == 0, result.output
    add_adapter(root / "store", tiny_model, "text", seed=3)
    return root / "store"
