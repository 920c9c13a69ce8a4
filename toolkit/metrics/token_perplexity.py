"""A Hugging Face `evaluate` metric: token-weighted perplexity from summed negative log-likelihoods.

Load it offline with `evaluate.load(path_to_this_file)`. Feed it, per scored sequence, the summed NLL
(natural log) of its predicted tokens and how many tokens were predicted; it returns
exp(sum of NLL / sum of tokens). Because it keeps sums, feeding it in any number of batches (or
gathered from any number of processes) gives the same result as one call, unlike averaging per-text
or per-batch perplexities.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Token-weighted perplexity: exp(total negative log-likelihood / total predicted tokens)."
_INPUTS = """
Args:
    nll: summed negative log-likelihood (nats) of the predicted tokens of each sequence.
    tokens: number of predicted tokens of each sequence.
Returns:
    perplexity: exp(sum(nll) / sum(tokens)); mean_nll: sum(nll) / sum(tokens); tokens: sum(tokens).
"""


class TokenPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"nll": datasets.Value("float64"), "tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll, tokens):
        total_tokens = int(sum(tokens))
        if total_tokens == 0:
            raise ValueError("no tokens were scored")
        mean_nll = math.fsum(nll) / total_tokens
        return {"perplexity": math.exp(mean_nll), "mean_nll": mean_nll, "tokens": total_tokens}
