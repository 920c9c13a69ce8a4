"""How an evaluation scores its texts: the settings of `toolkit.evaluate` and `gpt2-adapt eval` that are not
what to score, checked once. Kept apart from the scoring code, without torch, so that the CLI shows them in
its help at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..config.fields import setting
from ..config.recipe import Recipe
from ..data.detokenize import DETOKENIZERS
from ..errors import ToolkitError, param
from ..modeling.precision import LoadPrecision
from ..records import Protocol


@dataclass(frozen=True)
class EvalOptions:
    """How texts are scored: every setting of `gpt2-adapt eval` that is not what to score; its options are
    derived from these fields."""

    limit: int | None = setting(None, "Only the first N documents of each text and each task.")
    context: int | None = setting(
        None,
        "Positions per window [default: the recipe's block size, else the examples' adapter's, "
        "else the model's context].",
    )
    stride: int | None = setting(
        None, "Sliding windows: tokens between window starts [default: the context, i.e. disjoint windows]."
    )
    by_document: bool = setting(
        False, "Score each document on its own, as lm-evaluation-harness does [default: one stream]."
    )
    detokenize: str | None = setting(
        None,
        "Rewrite the scored text first: wikitext (words and bytes are counted on the original).",
        metavar="NAME",
    )
    max_tokens: int | None = setting(None, "Score only the first N tokens of each text (a quick estimate).")
    # 0: as many as the device's token budget allows
    batch_size: int = setting(0, "Windows per forward pass [default 0: automatic].", show_default=False)
    threads: int = setting(0, "CPU threads to score with; 0: chosen from the cores and their load.")
    as_text: bool = setting(
        False,
        f"Score prompt/completion adapters on plain text ({param('text_column')}, every token) instead of examples.",
    )
    # "fp32", "bf16", "fp16" (the base's weights), "int8", "nf4" or "fp4" (bitsandbytes); None: as a recipe's
    # training loaded its base (its quantization) when a recipe is scored, else fp32 (see `settled`)
    precision: str | None = setting(None, "Load the base in this precision.")
    strict: bool = True  # refuse an adapter that fails verification against its base
    progress: bool = False  # a progress bar on standard error

    def __post_init__(self):
        problems = []
        try:
            if self.precision is not None:
                LoadPrecision(self.precision)
        except ToolkitError as err:
            problems += err.raw
        for name in ("max_tokens", "limit", "context", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{param(name)}: must be at least 1 (got {value})")
        if self.batch_size < 0:
            problems.append(f"{param('batch_size')}: must be >= 0, 0 meaning automatic (got {self.batch_size})")
        if self.threads < 0:
            problems.append(
                f"{param('threads')}: must be >= 0, 0 choosing from the machine's load (got {self.threads})"
            )
        if self.detokenize is not None and self.detokenize not in DETOKENIZERS:
            problems.append(
                f"{param('detokenize')}: no detokenizer named {self.detokenize!r}; use {', '.join(DETOKENIZERS)}"
            )
        elif self.detokenize and self.max_tokens:
            problems.append(
                f"{param('max_tokens')} and {param('detokenize')}: the original's words and bytes cannot be "
                f"split between tokens of the rewritten text, so documents are scored whole; "
                f"use {param('limit')} N for the first N documents"
            )
        if problems:
            raise ToolkitError(*problems)

    def settled(self, recipe: Recipe | None = None) -> EvalOptions:
        """The options with their precision decided: as given; else, scoring a recipe, its base quantized as
        training quantized it (so that `metrics.json` is reproduced); else fp32."""
        if self.precision is not None:
            return self
        mode = recipe.quantization.mode if recipe is not None else "none"
        return replace(self, precision=mode if mode != "none" else "fp32")

    def protocol(self, context: int) -> Protocol:
        """The protocol at `context` (what the options say, or the default the caller found)."""
        return Protocol(
            self.context or context, self.stride or self.context or context, self.by_document, self.detokenize
        )
