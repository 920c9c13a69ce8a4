"""How tokens are chosen: the generation settings, checked, and the `generate()` arguments they mean.

Kept apart from the generation code, without torch, so that the CLI shows these defaults in its help at no
cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..config.fields import setting
from ..errors import ToolkitError, param


@dataclass(frozen=True)
class GenerationSettings:
    """How `generate` chooses tokens; the options of `gpt2-adapt generate` are derived from these fields."""

    max_new_tokens: int = setting(50, "Tokens to generate per sequence.")  # fewer when EOS comes first
    greedy: bool = setting(False, "Always take the likeliest token (the default samples).")
    temperature: float = setting(1.0, "Sampling temperature.")  # < 1 sharpens the distribution, > 1 flattens it
    top_k: int = setting(50, "Sample among the k likeliest tokens (0: all).")
    top_p: float = setting(1.0, "Nucleus sampling probability mass (1: off).")  # the smallest set holding it
    repetition_penalty: float = setting(1.0, "> 1 discourages repeated tokens (1: off).")
    num_sequences: int = setting(1, "Sequences per prompt.")
    seed: int | None = setting(None, "Seed the sampler: the same seed gives the same samples.")  # None: fresh

    def __post_init__(self):
        def finite_above_zero(value: float) -> bool:
            return value > 0 and math.isfinite(value)

        # (holds, what to say when it does not)
        checks = [
            (self.max_new_tokens >= 1, f"{param('max_new_tokens')}: must be at least 1 (got {self.max_new_tokens})"),
            (
                finite_above_zero(self.temperature),
                (
                    f"{param('temperature')}: must be a finite number > 0 (got {self.temperature}); "
                    f"for the likeliest tokens use {param('greedy', True)}"
                ),
            ),
            (self.top_k >= 0, f"{param('top_k')}: must be >= 0, 0 keeping all tokens (got {self.top_k})"),
            (0 < self.top_p <= 1, f"{param('top_p')}: must be in (0, 1] (got {self.top_p})"),
            (
                finite_above_zero(self.repetition_penalty),
                (
                    f"{param('repetition_penalty')}: must be a finite number > 0, 1 being off "
                    f"(got {self.repetition_penalty})"
                ),
            ),
            (self.num_sequences >= 1, f"{param('num_sequences')}: must be at least 1 (got {self.num_sequences})"),
            (
                not (self.greedy and self.num_sequences > 1),
                (
                    f"{param('greedy', True)} with {param('num_sequences')} > 1 would give copies of one text; "
                    "drop one of them"
                ),
            ),
        ]
        problems = [message for holds, message in checks if not holds]
        if problems:
            raise ToolkitError(*problems)

    def generate_kwargs(self) -> dict:
        if self.greedy:  # the likeliest token, after the repetition penalty (still deterministic)
            return {
                "max_new_tokens": self.max_new_tokens,
                "do_sample": False,
                "repetition_penalty": self.repetition_penalty,
            }
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
        }
