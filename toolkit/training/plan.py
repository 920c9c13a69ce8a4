"""Know before you start: sizes, memory and time of a recipe, from the model's config and a few steps.

The parameter counts come from the model built on the meta device (no weights are read). Memory is an
estimate: weights, LoRA optimizer state, activations and the fp32 logits, per precision; the time comes
from a few real training steps on random tokens of the recipe's shape.
"""

from __future__ import annotations

import math
import os
import time

import torch

from ..config.recipe import Recipe
from ..data.packing import prepare_data
from ..modeling import head_loss
from ..modeling.base import load_base, load_config
from ..modeling.lora import attach_lora
from ..modeling.precision import resolve_precision
from ..modeling.tokenizer import tokenizer_from
from ..sources.models import model_source

# Activation memory a transformer layer keeps for the backward pass, in 16-bit: 34 bytes per token per
# hidden unit plus 5 bytes per attention score (Korthikanti et al., 2022, "Reducing Activation
# Recomputation in Large Transformer Models"); twice that in fp32. An estimate, not a measurement.
ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN = 34
ATTENTION_BYTES_PER_SCORE = 5


def plan(recipe: Recipe, measure_steps: int = 3) -> dict:
    config = load_config(recipe)
    counts = _parameter_counts(recipe, config)
    tokenizer = tokenizer_from(model_source(recipe.model.name, recipe.model.revision), recipe.model.name)
    packed = prepare_data(recipe.data, tokenizer)
    t = recipe.training
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    blocks_per_step = t.batch_size * t.grad_accum * world
    steps_per_epoch = math.ceil(len(packed.train) / blocks_per_step)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    result = {
        "model": recipe.model.name,
        "parameters": counts,
        "adapter_bytes": counts["trainable"] * 4,
        "tokens_per_epoch": len(packed.train) * recipe.data.block_size,
        "eval_tokens": packed.stats["eval"]["tokens"],
        "steps": steps,
        "tokens_per_step": blocks_per_step * recipe.data.block_size,
        "memory_bytes": {p: _memory(recipe, config, counts, p) for p in ("fp32", "bf16", "int8")},
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    if measure_steps > 0:
        seconds = _seconds_per_step(recipe, measure_steps)
        result["seconds_per_step"] = seconds
        result["estimated_seconds"] = seconds * steps
    return result


def _parameter_counts(recipe: Recipe, config) -> dict:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = attach_lora(AutoModelForCausalLM.from_config(config), recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "trainable": trainable, "share": trainable / total}


def _memory(recipe: Recipe, config, counts: dict, precision: str) -> int:
    base = counts["total"] - counts["trainable"]
    embeddings = config.vocab_size * config.n_embd + config.n_positions * config.n_embd
    weights = {
        "fp32": 4 * base,
        "bf16": 2 * base,  # a bf16 copy of the base; the Trainer's autocast keeps fp32 master weights
        "int8": 4 * embeddings + 1 * (base - embeddings),  # bitsandbytes keeps embeddings and head in fp32
    }[precision]
    lora = counts["trainable"] * 4 * 4  # weights, gradients, two Adam moments, all fp32
    tokens = recipe.training.batch_size * recipe.data.block_size
    scale = 2 if precision == "fp32" else 1
    activations = tokens * config.n_layer * config.n_embd * ACTIVATION_BYTES_PER_TOKEN_PER_HIDDEN * scale
    scores = recipe.training.batch_size * config.n_layer * config.n_head * recipe.data.block_size**2
    attention = scores * ATTENTION_BYTES_PER_SCORE * scale
    if recipe.training.gradient_checkpointing:  # one layer's activations plus each layer's input
        activations = activations // config.n_layer + tokens * config.n_embd * config.n_layer * 2 * scale
        attention //= config.n_layer
    if head_loss.applies(recipe.training):
        logits = head_loss.CHUNK_ELEMENTS * 4 * 2  # one chunk of fp32 logits and its copy
    else:
        logits = tokens * config.vocab_size * 4 * 2  # the model's own loss: fp32 logits and their gradient
    return int(weights + lora + activations + attention + logits)


def _seconds_per_step(recipe: Recipe, steps: int) -> float:
    """Median seconds of a few optimizer steps (forward, backward, AdamW) on random tokens."""
    model = attach_lora(load_base(recipe), recipe)
    device = "cuda" if torch.cuda.is_available() and recipe.quantization.mode != "int8" else None
    if device:
        model.to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    shape = (recipe.training.batch_size, recipe.data.block_size)
    ids = torch.randint(0, model.config.vocab_size, shape, device=device or "cpu")
    precision = resolve_precision(recipe.training.precision)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    autocast = torch.autocast(device or "cpu", dtype=dtype, enabled=precision in ("bf16", "fp16"))
    head = model.get_output_embeddings()
    timings = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        started = time.perf_counter()
        for _ in range(recipe.training.grad_accum):
            with autocast:  # the loss as training computes it
                hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
                loss = head_loss.summed_nll(hidden, head.weight, ids) / ids[:, 1:].numel()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device:
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return sorted(timings[1:])[len(timings[1:]) // 2]
