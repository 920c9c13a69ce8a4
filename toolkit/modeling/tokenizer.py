"""The tokenizer of a model source: the fast GPT-2 tokenizer, with EOS doubling as the (left) padding token."""

from __future__ import annotations

from pathlib import Path

from ..errors import ToolkitError, first_line
from ..records import ModelSource

# A model folder holds its tokenizer as one of these (the fast tokenizer's file, or GPT-2's vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def tokenizer_from(source: ModelSource, label: str | None = None, key: str = "model.name"):
    """`label` is how messages name the model (the name the user gave); `key`, the setting that named it."""
    from transformers import AutoTokenizer

    label = label or source.path
    folder = Path(source.path)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty tokenizer here without a word, and training would go on with it.
        raise ToolkitError(
            f"{key}: {label} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into that folder too (tokenizer.save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(**source.from_pretrained(), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"{key}: could not load the tokenizer of {label!r}: {first_line(err)}") from None
    if tokenizer.pad_token is None:  # GPT-2 has none; batched generation needs one, packed training never pads
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    return tokenizer
