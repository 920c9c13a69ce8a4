"""The causal-LM loss from the last hidden states, a few hundred positions at a time.

transformers computes the logits of every position of the batch ([batch, block, 50257]), upcasts them to
fp32 for the loss and keeps them for the backward pass: 0.6 GB at batch 2 x 512, 5 GB at 8 x 1024, and
several passes over that memory per step. Here each chunk of positions goes through the output layer, its
summed NLL and its gradient with respect to the hidden states are computed at once, and the logits are
dropped; the backward pass only scales the stored gradient. Written by hand because no library the
toolkit uses fuses the output layer with the loss on CPU (Liger's kernel is Triton, GPU only). The base's
output layer is frozen under LoRA, so no gradient for it is needed.

The arithmetic is the model's own: the output layer runs in the autocast dtype when autocast is on (as
`nn.Linear` does), the softmax and NLL in fp32.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100  # label of a position that is not scored (transformers' convention)
CHUNK_ELEMENTS = 1 << 23  # logits per chunk: 8M fp32 values = 32 MB, 166 positions of GPT-2's 50257


def applies(training) -> bool:
    """Whether training settings (the recipe's or the Trainer's: both name `fsdp` and `deepspeed`) allow it:
    FSDP and DeepSpeed shard the output layer's weight outside the forward pass, so there the model's own
    loss is used."""
    return not (training.fsdp or training.deepspeed)


def summed_nll(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over positions of -log p(labels[t+1] | hidden[t]), labels equal to IGNORE_INDEX skipped.

    hidden: [batch, seq, d] final hidden states (after the last layer norm); weight: [vocab, d] output layer;
    labels: [batch, seq] token ids, not yet shifted. Returns an fp32 scalar that backpropagates to `hidden`.
    """
    hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    weight = compute_weight(weight)
    with torch.autocast(hidden.device.type, enabled=False):
        return _FusedHeadLoss.apply(hidden, weight, targets)


def compute_weight(weight: torch.Tensor) -> torch.Tensor:
    """The output layer's weight in the dtype it multiplies in: autocast's when autocast is on (as
    `nn.Linear` does), else its own. A caller scoring row by row casts once and passes the result."""
    device = weight.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight.dtype
    return weight.detach().to(dtype)


class _FusedHeadLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets):
        rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
        scored = targets != IGNORE_INDEX
        safe = torch.where(scored, targets, 0)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        for at in range(0, len(targets), rows):
            part = slice(at, at + rows)
            logits = (hidden[part].to(weight.dtype) @ weight.T).float()
            logsumexp = logits.logsumexp(dim=-1, keepdim=True)
            picked = logits.gather(1, safe[part, None])
            total += ((logsumexp - picked).squeeze(1) * scored[part]).sum()
            if grad is not None:
                # d NLL / d logits = softmax - one_hot(target), zero where the position is not scored
                probs = logits.sub_(logsumexp).exp_()
                probs.scatter_add_(1, safe[part, None], torch.full_like(picked, -1.0))
                probs.mul_(scored[part, None])
                grad[part] = (probs.to(weight.dtype) @ weight).to(hidden.dtype)
        ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        (grad,) = ctx.saved_tensors
        return grad * grad_total.to(grad.dtype), None, None
