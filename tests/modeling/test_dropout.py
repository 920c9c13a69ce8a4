"""The cheaper dropout masks compute what GPT-2's dropout computes: the same drop probability on the same
tensors, scaled the same, reproducible under the seed; with dropout off the model's loss and gradients are
exactly its own path's."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from toolkit.modeling.dropout import ATTENTION, Dropout, fast_dropout, keep_mask, register_attention, use_fast_dropout

N = 1 << 22  # 4M elements: the keep rate's standard error is about 1.5e-4 at p = 0.1


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_the_keep_rate_is_one_minus_p_and_kept_values_are_scaled_as_pytorch_does(p):
    torch.manual_seed(0)
    x = torch.randn(N)
    y = fast_dropout(x, p)
    kept = y != 0
    rate, error = kept.float().mean().item(), math.sqrt(p * (1 - p) / N)
    assert abs(rate - (1 - p)) < 5 * error
    assert torch.equal(y[kept], x[kept] * (1 / (1 - p)))  # exactly PyTorch's scaling
    ones = fast_dropout(torch.ones(N), p)
    assert abs(ones.mean().item() - 1) < 5 * error / (1 - p)  # the expectation is kept


def test_neighbouring_lanes_and_calls_are_independent():
    torch.manual_seed(0)
    mask = keep_mask(torch.Size([N]), 0.5).float()
    both = (mask[0::2] * mask[1::2]).mean().item()  # two lanes of one 64-bit hash
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / (N // 2))
    four = mask.view(-1, 4).sum(1)  # all four lanes of a hash: binomial(4, 1/2)
    assert abs((four == 4).float().mean().item() - 1 / 16) < 0.002
    second = keep_mask(torch.Size([N]), 0.5).float()
    assert abs((mask * second).mean().item() - 0.25) < 5 * math.sqrt(0.25 * 0.75 / N)


def test_masks_follow_the_seed_and_the_generator_state():
    torch.manual_seed(7)
    first = keep_mask(torch.Size([4096]), 0.1)
    state = torch.get_rng_state()
    after = keep_mask(torch.Size([4096]), 0.1)
    torch.manual_seed(7)
    assert torch.equal(keep_mask(torch.Size([4096]), 0.1), first)
    torch.set_rng_state(state)  # what a resumed run restores from its checkpoint
    assert torch.equal(keep_mask(torch.Size([4096]), 0.1), after)
    assert not torch.equal(first, after)


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 96, requires_grad=True)
    y = fast_dropout(x, 0.2)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, (y != 0).float() / 0.8)
    bf16 = torch.randn(8, 8, dtype=torch.bfloat16)
    assert fast_dropout(bf16, 0.1).dtype == torch.bfloat16
    assert fast_dropout(x, 0.2, training=False) is x and fast_dropout(x, 0.0) is x


def _model(tiny_model, fast: bool):
    attention = register_attention() if fast else "eager"
    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attention)
    if fast:
        use_fast_dropout(model)
    return model


def test_with_dropout_off_the_model_computes_exactly_its_own_path(tiny_model):
    ids = torch.randint(0, 300, (4, 48), generator=torch.Generator().manual_seed(1))
    results = []
    for fast in (False, True):
        model = _model(tiny_model, fast).eval()  # eval: dropout off
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (plain_loss, plain_grads), (fast_loss, fast_grads) = results
    assert torch.equal(plain_loss, fast_loss)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, fast_grads))


def test_with_dropout_on_the_training_loss_has_the_model_s_own_distribution(tiny_model):
    """Every nn.Dropout of GPT-2 is swapped (the attention's too, through the registered attention), and the
    training loss over many masks has the mean and spread of the model's own dropout."""
    fast = _model(tiny_model, fast=True).train()
    assert fast.config._attn_implementation == ATTENTION
    assert not [m for m in fast.modules() if type(m) is torch.nn.Dropout]
    assert {m.p for m in fast.modules() if isinstance(m, Dropout)} == {0.1}
    plain = _model(tiny_model, fast=False).train()
    ids = torch.randint(0, 300, (4, 48), generator=torch.Generator().manual_seed(1))
    losses = {}
    with torch.no_grad():
        for name, model in (("plain", plain), ("fast", fast)):
            torch.manual_seed(0)
            losses[name] = torch.stack([model(input_ids=ids, labels=ids).loss for _ in range(200)])
        off = plain.eval()(input_ids=ids, labels=ids).loss
    spread = math.sqrt((losses["plain"].var() + losses["fast"].var()).item() / 200)
    assert abs(losses["plain"].mean() - losses["fast"].mean()).item() < 4 * spread
    assert losses["fast"].std().item() == pytest.approx(losses["plain"].std().item(), rel=0.3)
    assert not torch.allclose(losses["fast"], off.expand(200))  # dropout did act
