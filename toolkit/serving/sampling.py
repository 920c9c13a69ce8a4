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


UNSAMPLEABLE = (
    "the model's next-token scores for this request are not finite (NaN or infinite): an adapter or a mix "
    "whose weights are too large for the base; try smaller mix weights, or check the adapter"
)


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


def next_tokens(logits: torch.Tensor, samplings: list[Sampling], generators: list) -> list[int | None]:
    """The next token of each row of `logits` ([rows, vocab]), each with its own sampling and generator;
    None for a row whose scores are not numbers (NaN, or +inf: nothing can be drawn or ranked). The checks
    and the greedy choice run once for the whole batch."""
    broken = (torch.isnan(logits) | torch.isposinf(logits)).any(dim=-1).tolist()
    likeliest = logits.argmax(dim=-1).tolist()
    return [
        None if bad else best if sampling.greedy else _draw(row, sampling, generator)
        for row, sampling, generator, bad, best in zip(logits, samplings, generators, broken, likeliest)
    ]


def _draw(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """A token drawn from one row's logits (a vector over the vocabulary) at its temperature and top_p."""
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
