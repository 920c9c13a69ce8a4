"""How tokens are chosen: the generation settings, checked, and the `generate()` arguments they mean.

Kept apart from the generation code, without torch, so that the CLI shows these defaults in its help at no
cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ToolkitError, param


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 50  # tokens generated per sequence (fewer when EOS comes first)
    greedy: bool = False  # always the likeliest token; the default samples
    temperature: float = 1.0  # sampling: < 1 sharpens the distribution, > 1 flattens it
    top_k: int = 50  # sampling: only the k likeliest tokens; 0 keeps all
    top_p: float = 1.0  # sampling: the smallest set of tokens holding this probability; 1 keeps all
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the text less likely; 1 is off
    num_sequences: int = 1  # sequences per prompt
    seed: int | None = None  # seeds the sampler: one seed, one set of samples; None: fresh samples

    def __post_init__(self):
        problems = []
        if self.max_new_tokens < 1:
            problems.append(f"{param('max_new_tokens')}: must be at least 1 (got {self.max_new_tokens})")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            problems.append(
                f"{param('temperature')}: must be a finite number > 0 (got {self.temperature}); "
                f"for the likeliest tokens use {param('greedy', True)}"
            )
        if self.top_k < 0:
            problems.append(f"{param('top_k')}: must be >= 0, 0 keeping all tokens (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            problems.append(f"{param('top_p')}: must be in (0, 1] (got {self.top_p})")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            problems.append(
                f"{param('repetition_penalty')}: must be a finite number > 0, 1 being off (got "
                f"{self.repetition_penalty})"
            )
        if self.num_sequences < 1:
            problems.append(f"{param('num_sequences')}: must be at least 1 (got {self.num_sequences})")
        elif self.greedy and self.num_sequences > 1:
            problems.append(
                f"{param('greedy', True)} with {param('num_sequences')} > 1 would give copies of one text; "
                "drop one of them"
            )
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
