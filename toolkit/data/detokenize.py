"""Detokenizers: undo a corpus's own tokenization before a model with its own tokenizer scores the text.

WikiText is stored tokenized ("the 2 @,@ 000 men , he said"); a GPT-2 model was trained on ordinary
text, so lm-evaluation-harness's `wikitext` task scores each page after rewriting it back. `wikitext` here
is the same rewriting, rule for rule and in the same order (written from the harness's behaviour, so that
the toolkit does not need the harness installed to reproduce its figures; a test checks the two agree on
real WikiText-2 text). Words and bytes are still counted on the original text, as the harness counts them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

# (written as, meant), applied in order
_NUMBERS = [(" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")]
_PUNCTUATION = [(f" {mark} ", f"{mark} ") for mark in ":;.!?,"]
_BRACKETS = [  # (pattern, replacement): no spaces just inside brackets and quotes
    (re.compile(r"\(\s*([^\)]*?)\s*\)"), r"(\1)"),
    (re.compile(r"\[\s*([^\]]*?)\s*\]"), r"[\1]"),
    (re.compile(r"{\s*([^}]*?)\s*}"), r"{\1}"),
    (re.compile(r"\"\s*([^\"]*?)\s*\""), r'"\1"'),
    (re.compile(r"'\s*([^']*?)\s*'"), r"'\1'"),
]
_MISC = [
    ("= = = =", "===="),
    ("= = =", "==="),
    ("= =", "=="),
    (" \u00b0 ", "\u00b0"),
    (" \n", "\n"),
    ("\n ", "\n"),
    (" N ", " 1 "),
    (" 's", "'s"),
]


def wikitext(text: str) -> str:
    """WikiText's tokenization undone: contractions, number separators (@-@ @,@ @.@), spaces before
    punctuation, spaces inside brackets and quotes, heading marks, degrees, spaces around newlines."""
    text = text.replace("s '", "s'")  # a plural's possessive
    text = re.sub(r"/' [0-9]/", r"/'[0-9]/", text)  # the harness's rule, a literal pattern that rarely matches
    for old, new in _NUMBERS + _PUNCTUATION:
        text = text.replace(old, new)
    for pattern, replacement in _BRACKETS:
        text = pattern.sub(replacement, text)
    for old, new in _MISC:
        text = text.replace(old, new)
    return text


DETOKENIZERS: dict[str, Callable[[str], str]] = {"wikitext": wikitext}
