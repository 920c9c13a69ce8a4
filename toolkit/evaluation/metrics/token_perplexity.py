"""A Hugging Face `evaluate` metric: token-weighted perplexity from summed negative log-likelihoods.

Load it offline with `evaluate.load(path_to_this_file)`. Feed it, per scored sequence, the summed NLL
(natural log) of its predicted tokens and how many tokens were predicted; it returns
exp(sum of NLL / sum of tokens). Because it keeps sums, feeding it in any number of batches (or
gathered from any number of processes) gives the same result as one call, unlike averaging per-text
or per-batch perplexities.

The "text" configuration (`evaluate.load(path, "text")`) also takes, per sequence, the UTF-8 bytes and
the words of the text its predicted tokens stand for, and adds bits per byte, byte-level and word-level
perplexity: the same total NLL spread over units that do not depend on the tokenizer.
"""

import math

import datasets
import evaluate

_DESCRIPTION = "Token-weighted perplexity: exp(total negative log-likelihood / total predicted tokens)."
_INPUTS = """
Args:
    nll: summed negative log-likelihood (nats) of the predicted tokens of each sequence.
    tokens: number of predicted tokens of each sequence.
    bytes: ("text" configuration) UTF-8 bytes of the text those tokens stand for.
    words: ("text" configuration) words of the text those tokens stand for.
Returns:
    perplexity: exp(sum(nll) / sum(tokens)); mean_nll: sum(nll) / sum(tokens); tokens: sum(tokens).
    "text" configuration, also: bytes, words (the sums), bits_per_byte: sum(nll) / (ln 2 * sum(bytes)),
    byte_perplexity: exp(sum(nll) / sum(bytes)), word_perplexity: exp(sum(nll) / sum(words)).
"""
CONFIGS = ("default", "text")


class TokenPerplexity(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise ValueError(f"unknown configuration {self.config_name!r}; use one of {', '.join(CONFIGS)}")
        features = {"nll": datasets.Value("float64"), "tokens": datasets.Value("int64")}
        if self.config_name == "text":
            features |= {"bytes": datasets.Value("int64"), "words": datasets.Value("int64")}
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(features),
        )

    def _compute(self, nll, tokens, bytes=None, words=None):
        total_tokens = int(sum(tokens))
        if total_tokens == 0:
            raise ValueError("no tokens were scored")
        total_nll = math.fsum(nll)
        mean_nll = total_nll / total_tokens
        result = {"perplexity": _exp(mean_nll), "mean_nll": mean_nll, "tokens": total_tokens}
        if bytes is None:
            return result
        total_bytes, total_words = int(sum(bytes)), int(sum(words))
        # A count of zero (no word begins in the scored text) has no per-unit figure: None, not 0 or NaN.
        result |= {
            "bytes": total_bytes,
            "words": total_words,
            "bits_per_byte": total_nll / (math.log(2) * total_bytes) if total_bytes else None,
            "byte_perplexity": _exp(total_nll / total_bytes) if total_bytes else None,
            "word_perplexity": _exp(total_nll / total_words) if total_words else None,
        }
        return result


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:  # above e^709: a model that is wrong about almost everything
        return math.inf
