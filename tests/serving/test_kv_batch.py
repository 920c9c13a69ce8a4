"""KVBatch without a server: rows of different lengths joined into one cache and dropped from it, each row
computing what it computes alone (the logits of its next token), and no column left that only padding fills."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from toolkit.serving.engine import KVBatch

PAD = 0
PROMPTS = [[5, 9, 14], [7, 3, 8, 21, 30, 2, 11], [12], [40, 41, 42, 43, 44]]


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model).eval()


def alone(model, prompt: list[int], then: list[int]) -> list[torch.Tensor]:
    """The next-token logits of one row by itself: after its prompt, and after each token of `then`."""
    batch, logits = KVBatch.prefill(model, [prompt], ["__base__"], PAD, "cpu")
    out = [logits[0]]
    for token in then:
        out.append(batch.step(model, [token], ["__base__"])[0])
    return out


def prefill(model, prompts):
    return KVBatch.prefill(model, prompts, ["__base__"] * len(prompts), PAD, "cpu")


def step(model, batch, tokens):
    return batch.step(model, tokens, ["__base__"] * len(tokens))


def assert_no_padding_only_column(batch: KVBatch) -> None:
    assert bool(batch.mask.any(dim=0).all()), batch.mask
    for layer in batch.cache.layers:
        assert layer.keys.shape[0] == len(batch) and layer.keys.shape[2] == batch.mask.shape[1]


@pytest.mark.parametrize("first, second", [([0, 2], [1]), ([1], [0, 2, 3])], ids=["joining longer", "joining shorter"])
def test_joined_rows_compute_what_each_computes_alone(model, first, second):
    prompts = [PROMPTS[i] for i in first + second]
    batch, logits = prefill(model, [PROMPTS[i] for i in first])
    other, other_logits = prefill(model, [PROMPTS[i] for i in second])
    batch.join(other)
    assert len(batch) == len(prompts)
    assert batch.mask.shape[1] == max(map(len, prompts))
    assert [int(n) for n in batch.mask.sum(dim=1)] == [len(p) for p in prompts]
    assert_no_padding_only_column(batch)

    logits = torch.cat([logits, other_logits])
    fed = [[17, 23, 4] for _ in prompts]
    steps = [logits] + [step(model, batch, [row[k] for row in fed]) for k in range(3)]
    for row, prompt in enumerate(prompts):
        expected = alone(model, prompt, fed[row])
        for k, want in enumerate(expected):
            torch.testing.assert_close(steps[k][row], want, atol=1e-5, rtol=1e-5)


def test_keep_reorders_drops_and_cuts_the_padding_left_alone(model):
    batch, _ = prefill(model, PROMPTS)
    step(model, batch, [1, 2, 3, 4])
    batch.keep([2, 0])  # the longest row (7 tokens) and the 5-token row leave
    assert len(batch) == 2
    assert [int(n) for n in batch.mask.sum(dim=1)] == [len(PROMPTS[2]) + 1, len(PROMPTS[0]) + 1]
    assert batch.mask.shape[1] == len(PROMPTS[0]) + 1  # columns only the departed rows filled are gone
    assert_no_padding_only_column(batch)

    got = step(model, batch, [9, 10])
    torch.testing.assert_close(got[0], alone(model, PROMPTS[2], [3, 9])[-1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], alone(model, PROMPTS[0], [1, 10])[-1], atol=1e-5, rtol=1e-5)


def test_rows_leave_and_join_over_and_over_and_each_stays_its_own(model):
    """The serving pattern: a row leaves, another joins, all decode; each row's logits stay its own."""
    history = {0: [], 1: []}
    batch, _ = prefill(model, [PROMPTS[0], PROMPTS[1]])
    rows = [0, 1]
    for rounds, newcomer in enumerate([2, 3]):
        tokens = [20 + rounds + r for r in rows]
        step(model, batch, tokens)
        for r, t in zip(rows, tokens):
            history[r].append(t)
        batch.keep([1])  # the first row finishes
        rows = rows[1:]
        other, _ = prefill(model, [PROMPTS[newcomer]])
        batch.join(other)
        rows.append(newcomer)
        history[newcomer] = []
        assert_no_padding_only_column(batch)
    tokens = [30 + r for r in rows]
    got = step(model, batch, tokens)
    for position, r in enumerate(rows):
        want = alone(model, PROMPTS[r], history[r] + [tokens[position]])[-1]
        torch.testing.assert_close(got[position], want, atol=1e-5, rtol=1e-5)
