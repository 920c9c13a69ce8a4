"""How a row chooses its next token from the logits, and the log-probabilities it reports.

Temperature 0 is greedy: the likeliest token, as `toolkit.generate(greedy=True)` takes it; so is any
temperature below MIN_TEMPERATURE (logits divided by a temperature below about 1e-37 overflow to infinity,
and far above that sampling already picks the likeliest token but for exact ties). Otherwise the
logits are divided by the temperature and cut to `top_p` by transformers' own warpers, and the token is
drawn with the row's own generator: a seeded request gives the same text whatever it is batched with.
No top-k cut is applied (the OpenAI API has none). Log-probabilities are those of the model itself,
before temperature and top_p.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


MIN_TEMPERATURE = 1e-3  # a lower temperature samples greedily (see above)


class Unsampleable(ValueError):
    """A row's next-token probabilities are not numbers (NaN or infinite logits): nothing can be drawn."""


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # of this row's generator (None: drawn afresh)

    @property
    def greedy(self) -> bool:
        return self.temperature < MIN_TEMPERATURE

    def generator(self, device) -> torch.Generator | None:
        if self.greedy:
            return None
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def row_seeds(seed: int | None, rows: int) -> list[int | None]:
    """One seed per row of a request: drawn from the request's seed, so that its n texts differ and the
    same seed gives the same n texts again."""
    if seed is None:
        return [None] * rows
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**62, (rows,), generator=generator).tolist()


def choose(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token for one row, from its logits (a vector over the vocabulary)."""
    if bool(torch.isnan(logits).any() or torch.isposinf(logits).any()):
        raise Unsampleable(
            "the model's next-token scores for this request are not finite (NaN or infinite): an adapter or a mix "
            "whose weights are too large for the base; try smaller mix weights, or check the adapter"
        )
    if sampling.greedy:
        return int(logits.argmax())
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    scores = logits.float().unsqueeze(0)
    scores = TemperatureLogitsWarper(sampling.temperature)(None, scores)
    if sampling.top_p < 1:
        scores = TopPLogitsWarper(sampling.top_p)(None, scores)
    probabilities = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


def top(logprobs: torch.Tensor, k: int, chosen: int) -> list[tuple[int, float]]:
    """The k likeliest tokens with their log-probabilities, and the chosen one (OpenAI's "logprobs+1")."""
    values, ids = logprobs.topk(k) if k else (logprobs[:0], logprobs[:0].long())
    pairs = list(zip(ids.tolist(), values.tolist()))
    if chosen not in ids.tolist():
        pairs.append((chosen, float(logprobs[chosen])))
    return pairs
