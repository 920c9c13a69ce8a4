"""An ONNX model for ONNX Runtime, with past key values, through torch's exporter (torch.export + onnxscript).

optimum's exporter (now the `optimum-onnx` package) requires transformers < 4.58, and this toolkit runs on
transformers 5, so torch's own exporter writes the file. The graph takes the KV cache as plain tensors and
returns the new one, as optimum's `decoder_model_merged.onnx` does: the first step passes a past of length 0.

Inputs: input_ids, attention_mask (batch, past + sequence), position_ids, past_key_values.N.key / .value
(batch, heads, past, head size). Outputs: logits, present.N.key / .value (batch, heads, past + sequence, head size).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import torch

MODEL_FILE = "model.onnx"
OPSET = 18


def past_names(n_layer: int, prefix: str = "past_key_values") -> list[str]:
    return [f"{prefix}.{layer}.{kind}" for layer in range(n_layer) for kind in ("key", "value")]


class _WithPast(torch.nn.Module):
    """The model with its KV cache as a flat list of tensors in and out (what an ONNX graph can carry)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def write_onnx(folder: Path, model, tokenizer) -> None:
    """The merged GPT-2 (no peft layers, float32) as folder/model.onnx (its weights in model.onnx.data beside it),
    with its config and tokenizer."""
    from torch.export import Dim

    config = model.config
    model = model.float().eval()
    model.set_attn_implementation("eager")  # plain matmuls, which every ONNX Runtime build runs
    heads, size = config.n_head, config.n_embd // config.n_head
    # Example inputs for tracing only: every dimension below is exported as dynamic.
    ids = torch.zeros(2, 3, dtype=torch.long)
    past = tuple(torch.zeros(2, heads, 2, size) for _ in range(2 * config.n_layer))
    mask = torch.ones(2, 5, dtype=torch.long)
    positions = torch.arange(2, 5).expand(2, 3)
    dynamic = Dim.DYNAMIC
    shapes = (
        {0: dynamic, 1: dynamic},
        {0: dynamic, 1: dynamic},
        {0: dynamic, 1: dynamic},
        tuple({0: dynamic, 2: dynamic} for _ in past),
    )
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporter prints its progress on standard output, which belongs to the command's own report.
    with torch.inference_mode(False), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            _WithPast(model).eval(),
            (ids, mask, positions, past),
            str(folder / MODEL_FILE),
            input_names=["input_ids", "attention_mask", "position_ids", *past_names(config.n_layer)],
            output_names=["logits", *past_names(config.n_layer, "present")],
            dynamic_shapes=shapes,
            dynamo=True,
            opset_version=OPSET,
            verbose=False,
        )
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
