"""Perplexity: `perplexity()` against a plain-torch computation, through a peft LoRA wrapper, and the
local `evaluate` metric that keeps token-weighted sums."""

import math

import datasets
import evaluate
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolkit.data import pack
from toolkit.perplexity import load_metric, perplexity

BLOCK = 64  # the tiny model's context


def load_model(folder):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def model(tiny_model):
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def blocks(tiny_model, corpus_dir) -> torch.Tensor:
    """7 packed blocks of the validation text, as training would see them."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    documents = datasets.Dataset.from_dict({"text": (corpus_dir / "valid.txt").read_text().splitlines()[:40]})
    packed, _ = pack(documents, "text", tokenizer, BLOCK)
    assert len(packed) >= 7
    return torch.from_numpy(packed[:7]).long()


def batches_of(blocks: torch.Tensor, sizes) -> list[dict]:
    out, start = [], 0
    for size in sizes:
        out.append({"input_ids": blocks[start : start + size]})
        start += size
    assert start == len(blocks)
    return out


@torch.no_grad()
def by_hand(model, batches) -> tuple[float, int, list[float]]:
    """exp(sum of next-token NLL over positions 1..n-1 of every block / their count), in float64.
    Also returns each batch's own perplexity."""
    total, count, per_batch = torch.zeros((), dtype=torch.float64), 0, []
    for batch in batches:
        ids = batch["input_ids"]
        logp = torch.log_softmax(model(ids).logits.double(), dim=-1)
        nll = -logp[:, :-1].gather(-1, ids[:, 1:, None]).sum()
        total += nll
        count += ids[:, 1:].numel()
        per_batch.append(math.exp(nll.item() / ids[:, 1:].numel()))
    return math.exp(total.item() / count), count, per_batch


def test_perplexity_matches_a_plain_torch_computation(model, blocks):
    """Batches of 3, 3 and 1 blocks: perplexity and token count equal the direct float64 computation."""
    batches = batches_of(blocks, [3, 3, 1])
    result = perplexity(model, batches)
    expected, count, _ = by_hand(model, batches)

    assert abs(result["perplexity"] - expected) / expected <= 1e-5
    assert result["tokens"] == count == 7 * (BLOCK - 1)
    assert result["mean_nll"] == pytest.approx(math.log(expected), rel=1e-6)
    assert 1 < result["perplexity"] < 10 * model.config.vocab_size  # a random model is near uniform


def test_perplexity_scores_in_eval_mode_and_restores_training_mode(tiny_model, blocks):
    """A model left in training mode (dropout on) is scored without dropout and handed back training."""
    model = load_model(tiny_model)
    expected, _, _ = by_hand(model, batches_of(blocks, [7]))
    model.train()
    result = perplexity(model, batches_of(blocks, [4, 3]))
    assert model.training
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_fresh_lora_scores_like_the_base_model(tiny_model, model, blocks):
    """peft LoRA on c_attn starts with B = 0, so the wrapped model has the base's perplexity; once B is
    nonzero it does not (the adapter really is in the path)."""
    base = perplexity(model, batches_of(blocks, [3, 3, 1]))["perplexity"]
    torch.manual_seed(0)
    wrapped = get_peft_model(
        load_model(tiny_model),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["c_attn"], fan_in_fan_out=True),
    )
    lora_b = [p for name, p in wrapped.named_parameters() if "lora_B" in name]
    assert len(lora_b) == model.config.n_layer and all(torch.count_nonzero(p) == 0 for p in lora_b)

    assert perplexity(wrapped, batches_of(blocks, [3, 3, 1]))["perplexity"] == pytest.approx(base, rel=1e-7)
    with torch.no_grad():
        for p in lora_b:
            p.normal_(std=0.5)
    assert perplexity(wrapped, batches_of(blocks, [3, 3, 1]))["perplexity"] != pytest.approx(base, rel=1e-3)


def test_the_metric_loads_offline_and_sums_across_batches():
    """Many add_batch calls = one compute call = exp(sum nll / sum tokens) by hand."""
    metric = load_metric()
    assert isinstance(metric, evaluate.Metric)
    nll = [12.5, 3.25, 40.0, 0.5, 7.75, 19.0, 2.0]
    tokens = [10, 3, 31, 1, 8, 15, 2]

    for start in range(0, len(nll), 3):
        metric.add_batch(nll=nll[start : start + 3], tokens=tokens[start : start + 3])
    batched = metric.compute()
    at_once = load_metric().compute(nll=nll, tokens=tokens)
    single = load_metric()
    for n, t in zip(nll, tokens):
        single.add(nll=n, tokens=t)

    expected = math.exp(sum(nll) / sum(tokens))
    assert batched["perplexity"] == pytest.approx(expected, rel=1e-12)
    assert batched == at_once == single.compute()
    assert batched["tokens"] == sum(tokens) and batched["mean_nll"] == pytest.approx(sum(nll) / sum(tokens))


def test_the_metric_refuses_zero_tokens():
    """No scored token means no perplexity: an error, not exp(0/0) or 1.0."""
    with pytest.raises(ValueError, match="no tokens"):
        load_metric().compute(nll=[0.0, 0.0], tokens=[0, 0])


def test_perplexity_is_token_weighted_not_a_mean_of_batch_perplexities():
    """A 1-token batch at NLL 3 and a 99-token batch at NLL 1 each: the answer is exp(102/100), not the
    mean of e^3 and e^1."""
    metric = load_metric()
    metric.add_batch(nll=[3.0], tokens=[1])
    metric.add_batch(nll=[99.0], tokens=[99])
    result = metric.compute()
    token_weighted = math.exp(102 / 100)
    mean_of_batches = (math.exp(3) + math.exp(1)) / 2
    assert result["perplexity"] == pytest.approx(token_weighted, rel=1e-12)
    assert abs(mean_of_batches - token_weighted) > 5  # the two readings are far apart here


def test_perplexity_of_uneven_batches_weights_every_token_equally(model, blocks):
    """Batches of 1 and 6 blocks: perplexity() returns the token-weighted value, which differs from the
    mean of the two batch perplexities."""
    batches = batches_of(blocks, [1, 6])
    expected, _, per_batch = by_hand(model, batches)
    result = perplexity(model, batches)["perplexity"]
    assert result == pytest.approx(expected, rel=1e-5)
    mean_of_batches = sum(per_batch) / len(per_batch)
    assert abs(mean_of_batches - expected) / expected > 1e-4  # this case does tell the two apart
    assert result != pytest.approx(mean_of_batches, rel=1e-5)
