"""Helpers the tests share: reading the CLI's error lines, snapshots of what is on disk, and damage.

(Fixtures live in conftest.py; these are plain functions, imported as `from helpers import ...`.)
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from toolkit.cli import main


def error_lines(output: str) -> list[str]:
    """The `error: ...` lines a command printed: one per problem."""
    return [line for line in output.splitlines() if line.startswith("error:")]


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes ({} for a folder that does not exist): "nothing changed"
    means this is equal before and after."""
    folder = Path(folder)
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def snapshot(root: Path, ignore: tuple[str, ...] = ("cache",)) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under root, but the top-level folders in `ignore`."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(Path(root).rglob("*"))
        if p.relative_to(root).parts[0] not in ignore
    }


def truncate(path: Path) -> None:
    """Cut a file to half its length, as a crash or a full disk would."""
    path = Path(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def run_cli(*args):
    """`gpt2-adapt -q args...` in this process: the click Result (stdout and stderr apart)."""
    return CliRunner().invoke(main, ["-q", *map(str, args)], catch_exceptions=False)


def results_of(*args) -> list[dict]:
    """The --json results of `gpt2-adapt -q args...`, which must succeed."""
    result = run_cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tiny_llama_config(vocab_size: int):
    """A complete causal LM's config that is not GPT-2 (one tiny Llama layer): what the toolkit must refuse."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
