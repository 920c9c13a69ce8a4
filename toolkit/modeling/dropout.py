"""GPT-2's dropout on a CPU, with masks that cost less to draw.

`torch.nn.functional.dropout` on a CPU draws one Bernoulli sample per element from the default generator,
one element after another on one thread, and keeps a float mask for the backward pass: for GPT-2 124M at
batch 2 x 512 that is about a quarter of a LoRA training step (BENCHMARKS.md). Here one 64-bit seed is drawn
from the same generator per call, and the mask comes from a counter-based hash of it (splitmix64's
finaliser on seed + i x golden ratio), computed by vectorised tensor operations on every thread, four
16-bit lanes per 64-bit hash. An element is kept when its lane falls below (1 - p) x 65536, so the drop
probability is p rounded to the nearest 1/65536 (0.1 becomes 0.1000061); kept elements are scaled by
1 / (1 - p) exactly as PyTorch does, and the mask is kept as one byte per element. The masks follow the
seed (`torch.manual_seed`) and the generator's state, which the Trainer saves with every checkpoint, so a
resumed run draws the same masks as an uninterrupted one.

On CUDA PyTorch's own dropout is already a fused, parallel kernel and is used unchanged. Written by hand
because no library the toolkit uses offers a cheaper dropout for a CPU.
"""

from __future__ import annotations

import torch
from torch import nn

LANES = 4  # 16-bit lanes per 64-bit hash
# splitmix64's constants as signed 64-bit integers (torch has no uint64 arithmetic): the golden-ratio
# increment 0x9E3779B97F4A7C15 and the finaliser's multipliers 0xBF58476D1CE4E5B9, 0x94D049BB133111EB.
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)
_MIX = (0xBF58476D1CE4E5B9 - (1 << 64), 0x94D049BB133111EB - (1 << 64))
ATTENTION = "gpt2_adapt_eager"  # the name under which the attention below is registered with transformers


def keep_mask(shape: torch.Size, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (p rounded to 1/65536)."""
    count = 1
    for size in shape:
        count *= size
    seed = torch.randint(-(1 << 62), 1 << 62, (), dtype=torch.int64)  # from the default generator
    x = torch.arange((count + LANES - 1) // LANES, dtype=torch.int64, device=device).mul_(_GOLDEN).add_(seed)
    x = _xor_shift(x, 30).mul_(_MIX[0])
    x = _xor_shift(x, 27).mul_(_MIX[1])
    x = _xor_shift(x, 31)
    # Lanes are signed 16-bit values, uniform over [-32768, 32767]: keep the lowest (1 - p) x 65536 of them.
    threshold = round((1 - p) * 65536) - 32768
    return (x.view(torch.int16)[:count] < threshold).view(shape)


def _xor_shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """x ^ (x >>> bits), the shift logical (torch's >> on int64 is arithmetic: mask the sign bits off)."""
    return x.bitwise_xor_((x >> bits).bitwise_and_((1 << (64 - bits)) - 1))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        mask = keep_mask(x.shape, p, x.device)
        ctx.save_for_backward(mask)
        ctx.scale = 1.0 / (1.0 - p)
        return x * mask * ctx.scale

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`torch.nn.functional.dropout`, with the cheaper masks on a CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return nn.functional.dropout(x, p, training=True)
    return _Dropout.apply(x, p)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same place in the model) drawing its masks with `fast_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0, **kwargs):
    """GPT-2's plain ("eager") attention, its dropout on the attention weights drawn as above."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1).type(value.dtype)  # back to V's dtype under autocast
    weights = fast_dropout(weights, dropout, module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


def register_attention() -> str:
    """Make `eager_attention` available to transformers as ATTENTION, with the eager attention's masks (for
    a name without a mask function transformers builds no mask at all: no causal masking); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTENTION, eager_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)
    return ATTENTION


def use_fast_dropout(model: nn.Module) -> None:
    """Swap every `nn.Dropout` of the model for `Dropout` with the same probability."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
