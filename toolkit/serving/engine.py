"""Decoding many rows at once, each with its own adapter, rows joining and leaving between steps.

The rows in flight share one key/value cache, left-padded to a common length: a new row is prefilled
(with the others that arrived with it) and joins the running batch by padding whichever side is shorter;
a finished row is dropped from it, and columns that only padding fills any more are cut. Every step is one
forward pass over all rows, with peft routing each row through its own adapter (`adapter_names`), then
each row picks its next token (sampling.py). A row's positions are its own (0 at its first token) and
its padding is masked, so it computes what it would compute alone: greedy output is token for token
`toolkit.generate`'s.
"""

from __future__ import annotations

import torch

from ..modeling.switching import base_of, layers_enabled, loaded_adapters


def forward(model, adapter_names: list[str], **inputs):
    """One forward pass, each row through its adapter (modeling.switching.BASE: none)."""
    with torch.inference_mode():
        if not loaded_adapters(model):  # a plain base, or a peft model whose adapters were all unloaded
            return base_of(model)(**inputs)
        # peft routes rows by `adapter_names` only while the adapter layers are enabled.
        with layers_enabled(model):
            return model(**inputs, adapter_names=adapter_names)


def _pad_left(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class KVBatch:
    """The key/value cache and attention mask of the rows in flight, in row order."""

    def __init__(self, cache, mask: torch.Tensor):
        self.cache, self.mask = cache, mask  # mask: [rows, length], 1 for a real token, 0 for padding

    @classmethod
    def prefill(
        cls, model, prompts: list[list[int]], adapter_names: list[str], pad_id: int, device, all_logits: bool = False
    ) -> tuple[KVBatch, torch.Tensor]:
        """The prompts run through the model, left-padded; returns the batch and the logits of each
        prompt's last position ([rows, vocab]), or of every position ([rows, length, vocab])."""
        from transformers import DynamicCache

        length = max(map(len, prompts))
        ids = torch.tensor([[pad_id] * (length - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each row counts from its own first token
        cache = DynamicCache(config=model.config)
        out = forward(
            model,
            adapter_names,
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        logits = out.logits.float() if all_logits else out.logits[:, -1].float()
        return cls(out.cache, mask), logits

    def __len__(self) -> int:
        return self.mask.shape[0]

    def join(self, other: KVBatch) -> None:
        """Append `other`'s rows, both sides padded on the left to the longer cache."""
        length = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, length, 2), _pad_left(theirs.keys, length, 2)])
            mine.values = torch.cat([_pad_left(mine.values, length, 2), _pad_left(theirs.values, length, 2)])
        self.mask = torch.cat([_pad_left(self.mask, length, 1), _pad_left(other.mask, length, 1)])

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), and cut the columns left holding padding alone."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.mask = self.mask[index]
        real = self.mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def step(self, model, tokens: list[int], adapter_names: list[str]) -> torch.Tensor:
        """Feed each row its latest token; returns the logits of the next one, [rows, vocab]."""
        device = self.mask.device
        ids = torch.tensor(tokens, device=device).unsqueeze(1)
        positions = self.mask.sum(dim=1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        out = forward(
            model,
            adapter_names,
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
        )
        self.cache = out.cache
        return out.logits[:, -1].float()
