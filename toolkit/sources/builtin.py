"""Offline stand-ins for the quickstart: a tiny GPT-2, and a corpus and examples that every Python
installation ships.

`builtin:tiny-gpt2` is a 2-layer GPT-2 with random weights and a byte-level BPE tokenizer trained on
`builtin:python-docs`, the text of Python's own reference documentation (`pydoc_data.topics`).
`builtin:python-qa` is prompt/completion pairs made from the same documentation: each titled section's
title is a prompt, and the start of its first paragraph the completion. All are written once into the cache
as ordinary folders and files, so from there on they travel the same `from_pretrained` / `load_dataset`
paths as a hub model and a user's files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import ToolkitError
from ..files import atomic_folder, writable_cache

TINY_GPT2 = "builtin:tiny-gpt2"
PYTHON_DOCS = "builtin:python-docs"
PYTHON_QA = "builtin:python-qa"
EOS = "<|endoftext|>"
# Bump when what these builders write changes, so that stale cache entries are never reused.
VERSION = "v1"
# A completion is its paragraph's first sentences, up to this many characters (at least one sentence):
# a few lines of text, which fit a block of the tiny GPT-2's 256 positions with their title.
COMPLETION_CHARACTERS = 300
_RULE = re.compile(r"^([*=\-^~])\1+$")  # the line under a title in the topics' reStructuredText
_SENTENCE_END = re.compile(r"(?<=[.:])\s+(?=[A-Z*\"])")


def is_builtin(name: str) -> bool:
    return name.startswith("builtin:")


def datasets() -> dict[str, str]:
    """Each builtin dataset and what its rows hold."""
    return {PYTHON_DOCS: "text", PYTHON_QA: "prompt_completion"}


def dataset_files(name: str) -> dict[str, Path]:
    """The split files of a builtin dataset (see `datasets`), written into the cache the first time."""
    return {PYTHON_DOCS: python_docs, PYTHON_QA: python_qa}[name]()


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ToolkitError(
            "builtin datasets: this Python has no pydoc_data module; use data.train_files with your own data"
        ) from None
    return topics


def _held_out(i: int) -> bool:
    """Every 10th topic is the validation split (of both datasets: the same topics)."""
    return i % 10 == 0


def python_docs() -> dict[str, Path]:
    """Write the Python reference topics as train.txt / validation.txt (every 10th topic) and return them."""
    folder = writable_cache() / "builtin" / f"python-docs-{VERSION}"
    if not folder.exists():
        topics = _topics()
        with atomic_folder(folder) as tmp:
            names = sorted(topics)
            for split, held_out in (("train", False), ("validation", True)):
                text = "\n".join(topics[n].strip() for i, n in enumerate(names) if _held_out(i) == held_out)
                (tmp / f"{split}.txt").write_text(text + "\n", encoding="utf-8")
    return {"train": folder / "train.txt", "validation": folder / "validation.txt"}


def python_qa() -> dict[str, Path]:
    """Write {"prompt": title, "completion": first paragraph} rows of the Python reference topics' titled
    sections as train.jsonl / validation.jsonl (the sections of every 10th topic) and return them."""
    folder = writable_cache() / "builtin" / f"python-qa-{VERSION}"
    if not folder.exists():
        topics = _topics()
        names = sorted(topics)
        with atomic_folder(folder) as tmp:
            for split, held_out in (("train", False), ("validation", True)):
                rows = [row for i, n in enumerate(names) if _held_out(i) == held_out for row in sections(topics[n])]
                lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
                (tmp / f"{split}.jsonl").write_text(lines, encoding="utf-8")
    return {"train": folder / "train.jsonl", "validation": folder / "validation.jsonl"}


def sections(text: str) -> list[dict[str, str]]:
    """{"prompt": title, "completion": the start of its first paragraph} for each titled section of a topic
    that has a paragraph of prose (not a grammar rule or code, which are indented, nor a version note)."""
    lines = [line.rstrip() for line in text.splitlines()]
    rows = []
    for at, (title, rule) in enumerate(zip(lines, lines[1:])):
        if title.strip() and _RULE.match(rule.strip()) and len(rule.strip()) == len(title.strip()):
            paragraph = _first_paragraph(lines, at + 2)
            if paragraph:
                rows.append({"prompt": title.strip(), "completion": _first_sentences(paragraph)})
    return rows


def _first_paragraph(lines: list[str], at: int) -> str | None:
    """The first paragraph of prose from line `at` to the next title, joined into one line."""
    while at < len(lines):
        while at < len(lines) and not lines[at]:
            at += 1
        start = at
        while at < len(lines) and lines[at]:
            at += 1
        block = lines[start:at]
        if not block or len(block) > 1 and _RULE.match(block[1].strip()):
            return None  # the next section begins
        if not block[0].startswith(" ") and not re.match(r"(New|Changed|Deprecated) in version", block[0]):
            return " ".join(line.strip() for line in block)
    return None


def _first_sentences(paragraph: str) -> str:
    kept = ""
    for sentence in _SENTENCE_END.split(paragraph):
        if kept and len(kept) + 1 + len(sentence) > COMPLETION_CHARACTERS:
            break
        kept = f"{kept} {sentence}" if kept else sentence
    return kept


def tiny_gpt2() -> Path:
    """A local GPT-2 checkpoint folder: 2 layers, 128 dimensions, 256 positions, a 4,096-token BPE."""
    folder = writable_cache() / "builtin" / f"tiny-gpt2-{VERSION}"
    if not (folder / "config.json").exists():
        with atomic_folder(folder) as tmp:
            write_gpt2(tmp, [python_docs()["train"]], vocab_size=4096, n_positions=256, n_embd=128, n_layer=2, n_head=4)
    return folder


def write_gpt2(folder: Path, corpus: list[Path], vocab_size: int, seed: int = 0, **dims) -> None:
    """Save a GPT-2 with random weights (`dims`: GPT2Config sizes) and a byte-level BPE tokenizer
    trained on `corpus` into `folder`, as save_pretrained would for a real checkpoint."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train([str(path) for path in corpus], trainer)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=dims["n_positions"]
    )
    config = GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **dims
    )
    with torch.random.fork_rng(devices=[]):  # fixed weights that leave the caller's RNG untouched
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
