"""Offline stand-ins for the quickstart: a small pretrained GPT-2, and corpora and examples that every Python
installation ships.

`builtin:tiny-gpt2` is a 2-layer GPT-2 that the toolkit pretrains once on the standard library's prose (its
reference documentation, `pydoc_data.topics`, and its modules' docstrings, `python_prose`): see `pretraining`.
`builtin:python-docs` is the text of the reference documentation; `builtin:python-code` the source of the
standard library's top-level modules, a domain the builtin base never saw; `builtin:python-qa` is
prompt/completion pairs made from the reference documentation: each titled section's title is a prompt, and
the start of its first paragraph the completion. All are written once into the cache as ordinary folders and
files, so from there on they travel the same `from_pretrained` / `load_dataset` paths as a hub model and a
user's files.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from ..errors import ToolkitError
from ..files import atomic_folder, writable_cache

TINY_GPT2 = "builtin:tiny-gpt2"
PYTHON_DOCS = "builtin:python-docs"
PYTHON_QA = "builtin:python-qa"
PYTHON_CODE = "builtin:python-code"
EOS = "<|endoftext|>"
# Bump when what these builders write changes, so that stale cache entries are never reused.
VERSION = "v1"
# A completion is its paragraph's first sentences, up to this many characters (at least one sentence):
# a few lines of text, which fit a block of the tiny GPT-2's 256 positions with their title.
COMPLETION_CHARACTERS = 300
VALIDATION_LINES = 100  # python-code's validation: the first lines of each held-out module
MIN_PARAGRAPH = 40  # characters: shorter "paragraphs" are mostly titles, labels and stray fragments
_RULE = re.compile(r"^([*=\-^~])\1+$")  # the line under a title in the topics' reStructuredText
_SENTENCE_END = re.compile(r"(?<=[.:])\s+(?=[A-Z*\"])")


def is_builtin(name: str) -> bool:
    return name.startswith("builtin:")


def datasets() -> dict[str, str]:
    """Each builtin dataset and what its rows hold."""
    return {PYTHON_DOCS: "text", PYTHON_CODE: "text", PYTHON_QA: "prompt_completion"}


def dataset_files(name: str) -> dict[str, Path]:
    """The split files of a builtin dataset (see `datasets`), written into the cache the first time."""
    return {PYTHON_DOCS: python_docs, PYTHON_CODE: python_code, PYTHON_QA: python_qa}[name]()


def _topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise ToolkitError(
            "builtin datasets: this Python has no pydoc_data module; use data.train_files with your own data"
        ) from None
    return topics


def _held_out(i: int) -> bool:
    """Every 10th topic (or module) is held out: the validation split of every builtin dataset, never seen by
    the builtin base."""
    return i % 10 == 0


def _modules() -> list[Path]:
    """The standard library's top-level modules, in name order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    modules = sorted(stdlib.glob("*.py"))
    if not modules:
        raise ToolkitError(
            f"builtin datasets: this Python ships no module sources in {stdlib}; use data.train_files with "
            "your own data"
        )
    return modules


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


def python_code() -> dict[str, Path]:
    """Write the source of the standard library's top-level modules as train.jsonl / validation.jsonl, a
    {"text": source} row per module, and return them. Validation holds the first VALIDATION_LINES lines of
    every 10th module (enough to measure on, quick to score)."""
    folder = writable_cache() / "builtin" / f"python-code-{VERSION}"
    if not folder.exists():
        modules = _modules()
        with atomic_folder(folder) as tmp:
            for split, held_out in (("train", False), ("validation", True)):
                with open(tmp / f"{split}.jsonl", "w", encoding="utf-8") as out:
                    for i, path in enumerate(modules):
                        if _held_out(i) == held_out:
                            source = path.read_text(encoding="utf-8", errors="replace")
                            if held_out:
                                source = "".join(source.splitlines(keepends=True)[:VALIDATION_LINES])
                            out.write(json.dumps({"text": source}, ensure_ascii=False) + "\n")
    return {"train": folder / "train.jsonl", "validation": folder / "validation.jsonl"}


def python_prose() -> dict[str, Path]:
    """The builtin base's own corpus: the reference topics and the modules' docstrings (docstrings of the
    held-out modules left out, so python-code's validation stays unseen), as paragraphs of prose, one per
    line. Validation: the held-out topics' paragraphs."""
    folder = writable_cache() / "builtin" / f"python-prose-{VERSION}"
    if not folder.exists():
        topics = _topics()
        names = sorted(topics)
        train = [p for i, n in enumerate(names) if not _held_out(i) for p in paragraphs(topics[n])]
        train += [p for i, path in enumerate(_modules()) if not _held_out(i) for p in _docstring_paragraphs(path)]
        validation = [p for i, n in enumerate(names) if _held_out(i) for p in paragraphs(topics[n])]
        with atomic_folder(folder) as tmp:
            for split, lines in (("train", train), ("validation", validation)):
                (tmp / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"train": folder / "train.txt", "validation": folder / "validation.txt"}


def paragraphs(text: str) -> list[str]:
    """The paragraphs of prose of a reStructuredText-like text, each joined into one line: titles, rules,
    indented blocks (code, grammar, literal text) and tables left out. A small model learns words from
    these; from layout it learns mostly to print blank lines."""
    kept = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.splitlines() if not _RULE.match(line.strip())]
        if not lines or lines[0].startswith((" ", "\t", "+", "|", ">>>")):
            continue
        paragraph = " ".join(" ".join(lines).split())
        if len(paragraph) >= MIN_PARAGRAPH:
            kept.append(paragraph)
    return kept


def _docstring_paragraphs(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except SyntaxError:  # a module of another Python's syntax: its docstrings are not needed
        return []
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = (ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, nodes))
    return [p for docstring in docstrings if docstring for p in paragraphs(docstring)]


def code_texts(path: Path) -> list[str]:
    """The module sources of a python-code split file."""
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]


def corpus_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


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
    for at, (title, rule) in enumerate(itertools.pairwise(lines)):
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


def write_gpt2(folder: Path, corpus: list[Path], vocab_size: int, seed: int = 0, **dims) -> None:
    """Save a GPT-2 with random weights (`dims`: GPT2Config sizes) and a byte-level BPE tokenizer
    trained on `corpus` into `folder`, as save_pretrained would for a real checkpoint."""
    lines = (line for path in corpus for line in Path(path).read_text(encoding="utf-8").splitlines())
    tokenizer = train_tokenizer(lines, vocab_size, dims["n_positions"])
    random_gpt2(tokenizer, seed, **dims).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int):
    """A byte-level BPE (GPT-2's kind) of `vocab_size` tokens, EOS the one special token, trained on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(texts, trainer)
    return GPT2TokenizerFast(
        tokenizer_object=bpe, bos_token=EOS, eos_token=EOS, unk_token=EOS, model_max_length=max_length
    )


def random_gpt2(tokenizer, seed: int = 0, **dims):
    """A GPT2LMHeadModel with random weights (fixed by `seed`, the caller's RNG untouched) for `tokenizer`."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, **dims
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)
