"""Offline stand-ins for the quickstart: a tiny GPT-2 and a corpus that every Python installation ships.

`builtin:tiny-gpt2` is a 2-layer GPT-2 with random weights and a byte-level BPE tokenizer trained on
`builtin:python-docs`, the text of Python's own reference documentation (`pydoc_data.topics`). Both are
written once into the cache as ordinary folders and files, so from there on they travel the same
`from_pretrained` / `load_dataset` paths as a hub model and a user's files.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ToolkitError
from ..files import atomic_folder, writable_cache

TINY_GPT2 = "builtin:tiny-gpt2"
PYTHON_DOCS = "builtin:python-docs"
EOS = "<|endoftext|>"
# Bump when what these builders write changes, so that stale cache entries are never reused.
VERSION = "v1"


def is_builtin(name: str) -> bool:
    return name.startswith("builtin:")


def python_docs() -> dict[str, Path]:
    """Write the Python reference topics as train.txt / validation.txt (every 10th topic) and return them."""
    folder = writable_cache() / "builtin" / f"python-docs-{VERSION}"
    if not folder.exists():
        try:
            from pydoc_data.topics import topics
        except ImportError:
            raise ToolkitError(
                f"{PYTHON_DOCS}: this Python has no pydoc_data module; use data.train_files with your own text"
            ) from None
        with atomic_folder(folder) as tmp:
            names = sorted(topics)
            for split, keep in (("train", lambda i: i % 10 != 0), ("validation", lambda i: i % 10 == 0)):
                text = "\n".join(topics[n].strip() for i, n in enumerate(names) if keep(i))
                (tmp / f"{split}.txt").write_text(text + "\n", encoding="utf-8")
    return {"train": folder / "train.txt", "validation": folder / "validation.txt"}


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
