"""The one scorer against a plain-torch computation, through a peft LoRA wrapper, whatever its batching;
and the local `evaluate` metric that keeps token-weighted sums."""

import math

import datasets
import evaluate
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolkit.data.streams import token_stream
from toolkit.evaluation.metric import load_metric
from toolkit.evaluation.scoring import score
from toolkit.records import Protocol

BLOCK = 64  # the tiny model's context


def load_model(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def stream(tiny_model, corpus_dir):
    """The validation text's first 40 documents as one token stream: at least 7 blocks of BLOCK tokens."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    documents = datasets.Dataset.from_dict({"text": (corpus_dir / "valid.txt").read_text().splitlines()[:40]})
    stream = token_stream(documents, "text", tokenizer)
    assert len(stream.ids) >= 7 * BLOCK
    return stream


@torch.no_grad()
def by_hand(model, ids: np.ndarray, block: int = BLOCK) -> tuple[float, int]:
    """Disjoint windows from their definition, in float64: window k, ids[kB : kB + B], predicts
    ids[kB + 1 : kB + B + 1]; the tokens left after the last full one are predicted by ids[n-1-B : n-1].
    Returns exp(mean NLL) and the number of tokens predicted (all but the leading EOS)."""
    ids = torch.from_numpy(ids)
    full = (len(ids) - 1) // block
    inputs, targets = ids[: full * block].view(full, block), ids[1 : full * block + 1].view(full, block)
    logp = torch.log_softmax(model(inputs).logits.double(), dim=-1)
    nll = -logp.gather(-1, targets[..., None]).sum().item()
    left = len(ids) - 1 - full * block
    if left:
        logp = torch.log_softmax(model(ids[len(ids) - 1 - block : len(ids) - 1][None]).logits[0].double(), dim=-1)
        nll -= logp[-left:].gather(-1, ids[-left:, None]).sum().item()
    return math.exp(nll / (len(ids) - 1)), len(ids) - 1


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_the_score_matches_a_plain_torch_computation_whatever_the_batching(model, stream, batch_size):
    """Disjoint windows of BLOCK positions: perplexity and token count equal the direct float64 computation."""
    result = score(model, stream, Protocol(BLOCK, BLOCK), batch_size=batch_size).score
    expected, count = by_hand(model, stream.ids)
    assert abs(result.perplexity - expected) / expected <= 1e-5
    assert result.tokens == count == len(stream.ids) - 1 and (len(stream.ids) - 1) % BLOCK  # a partial last window
    assert result.mean_nll == pytest.approx(math.log(expected), rel=1e-6)
    assert 1 < result.perplexity < 10 * model.config.vocab_size  # a random model is near uniform


def test_scoring_runs_in_eval_mode_and_restores_training_mode(tiny_model, stream):
    """A model left in training mode (dropout on) is scored without dropout and handed back training."""
    model = load_model(tiny_model)
    expected, _ = by_hand(model, stream.ids)
    model.train()
    result = score(model, stream, Protocol(BLOCK, BLOCK)).score
    assert model.training
    assert result.perplexity == pytest.approx(expected, rel=1e-5)


def test_fresh_lora_scores_like_the_base_model(tiny_model, model, stream):
    """peft LoRA on c_attn starts with B = 0, so the wrapped model has the base's perplexity; once B is
    nonzero it does not (the adapter really is in the path)."""
    protocol = Protocol(BLOCK, BLOCK)
    base = score(model, stream, protocol).score.perplexity
    torch.manual_seed(0)
    wrapped = get_peft_model(
        load_model(tiny_model),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True),
    )
    lora_b = [p for name, p in wrapped.named_parameters() if "lora_B" in name]
    assert len(lora_b) == model.config.n_layer and all(torch.count_nonzero(p) == 0 for p in lora_b)

    assert score(wrapped, stream, protocol).score.perplexity == pytest.approx(base, rel=1e-7)
    with torch.no_grad():
        for p in lora_b:
            p.normal_(std=0.5)
    assert score(wrapped, stream, protocol).score.perplexity != pytest.approx(base, rel=1e-3)


def test_the_metric_loads_offline_and_sums_across_batches():
    """Many add_batch calls = one compute call = exp(sum nll / sum tokens) by hand."""
    metric = load_metric("default")
    assert isinstance(metric, evaluate.Metric)
    nll = [12.5, 3.25, 40.0, 0.5, 7.75, 19.0, 2.0]
    tokens = [10, 3, 31, 1, 8, 15, 2]

    for start in range(0, len(nll), 3):
        metric.add_batch(nll=nll[start : start + 3], tokens=tokens[start : start + 3])
    batched = metric.compute()
    at_once = load_metric("default").compute(nll=nll, tokens=tokens)
    single = load_metric("default")
    for n, t in zip(nll, tokens):
        single.add(nll=n, tokens=t)

    expected = math.exp(sum(nll) / sum(tokens))
    assert batched["perplexity"] == pytest.approx(expected, rel=1e-12)
    assert batched == at_once == single.compute()
    assert batched["tokens"] == sum(tokens) and batched["mean_nll"] == pytest.approx(sum(nll) / sum(tokens))


def test_the_metric_refuses_zero_tokens():
    """No scored token means no perplexity: an error, not exp(0/0) or 1.0."""
    with pytest.raises(ValueError, match="no tokens"):
        load_metric("default").compute(nll=[0.0, 0.0], tokens=[0, 0])


def test_the_metric_is_token_weighted_not_a_mean_of_batch_perplexities():
    """A 1-token batch at NLL 3 and a 99-token batch at NLL 1 each: the answer is exp(102/100), not the
    mean of e^3 and e^1."""
    metric = load_metric("default")
    metric.add_batch(nll=[3.0], tokens=[1])
    metric.add_batch(nll=[99.0], tokens=[99])
    result = metric.compute()
    token_weighted = math.exp(102 / 100)
    mean_of_batches = (math.exp(3) + math.exp(1)) / 2
    assert result["perplexity"] == pytest.approx(token_weighted, rel=1e-12)
    assert abs(mean_of_batches - token_weighted) > 5  # the two readings are far apart here
