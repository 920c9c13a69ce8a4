"""Know before you start: sizes, memory and time of a recipe, from the model's config and a few steps.

The parameter counts come from the model built on the meta device (no weights are read). Memory is an
estimate per base (fp32, bf16, int8, nf4: weights, LoRA optimizer state, and what one training step adds:
see MEMORY_MODEL); the time, and the peak memory at the recipe's own precision, come from a few real
training steps on random tokens of the recipe's shape. For prompt/completion examples it also says how much
of the blocks packing left empty.
"""

from __future__ import annotations

import math
import time

import torch

from ..config.recipe import Recipe
from ..data.packing import prepare_data
from ..distributed import launched_world
from ..hardware import peak_memory, resident_memory
from ..modeling import head_loss
from ..modeling.base import load_base, load_config
from ..modeling.lora import attach_lora
from ..modeling.precision import torch_dtype, training_precision
from ..modeling.tokenizer import tokenizer_from
from ..sources.models import model_source

# What one training step adds to a process's peak memory, per transformer layer: bytes per token per hidden
# unit, bytes per attention score, and a fixed part, for each base precision. The textbook count of what
# autograd keeps for the backward pass (Korthikanti et al., 2022: 34 bytes per token-hidden and 5 per score
# in 16 bits) is well under what a process really peaks at: the forward's temporaries, the backward's own
# tensors, bitsandbytes' fp16 copies and what the allocator holds on to count too. So these are measured:
# a least-squares fit to the peak RSS of real steps of the 124M architecture at four batch shapes on a CPU
# (`python -m benchmarks.plan_memory` prints the fit, its residuals and the estimate against the benchmark's
# rows; figures in docs/speed.md). CUDA's caching allocator holds less; there they overestimate. A 4-bit base
# takes the int8 base's step (bitsandbytes dequantizes both the same way), not measured apart.
MEMORY_MODEL = {  # precision: (bytes per token per hidden unit, bytes per attention score, fixed bytes)
    "fp32": (282, 5.9, 101 << 20),
    "bf16": (127, 5.8, 260 << 20),
    # int8: fitted to a plain training loop, then scaled (x0.72) to the benchmark's `gpt2-adapt train` at 2x512
    # (3.68 GiB measured), which holds less than that loop did; one Trainer point, not a full refit.
    "int8": (260, 10.2, 443 << 20),
}
MEMORY_MODEL["nf4"] = MEMORY_MODEL["int8"]
# Bytes per weight of a quantized layer: int8 one byte; nf4/fp4 half a byte plus the scale of its block of 64
# (fp32: 4/64 bytes), or with double quantisation an 8-bit scale and an fp32 one per 256 blocks.
FOUR_BIT_BYTES = {True: 0.5 + 1 / 64 + 4 / (64 * 256), False: 0.5 + 4 / 64}  # by double_quant
PLANNED = ("fp32", "bf16", "int8", "nf4")  # the bases whose memory plan estimates (fp4 takes what nf4 does)
# Where the estimate holds: the fixed parts above were fitted at 124M parameters, where they are a small share
# of the peak. A model so small that the fixed part is most of its estimate is outside that range: the tiny
# test GPT-2's nf4 estimate was 479 MiB against 59.6 MiB measured. Plan says so beside such figures.
FITTED_ON = "the 124M GPT-2 architecture"


def plan(recipe: Recipe, measure_steps: int = 3) -> dict:
    config = load_config(recipe)
    counts = parameter_counts(recipe, config)
    tokenizer = tokenizer_from(model_source(recipe.model.name, recipe.model.revision), recipe.model.name)
    packed = prepare_data(recipe.data, tokenizer)
    t = recipe.training
    world = launched_world()
    blocks_per_step = t.batch_size * t.grad_accum * world
    steps_per_epoch = math.ceil(len(packed.train) / blocks_per_step)
    steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    result = {
        "model": recipe.model.name,
        "parameters": counts,
        "adapter_bytes": counts["trainable"] * 4,
        "tokens_per_epoch": len(packed.train) * recipe.data.block_size,
        "eval_tokens": packed.stats["eval"]["tokens"],  # examples: their completions' tokens
        "steps": steps,
        "tokens_per_step": blocks_per_step * recipe.data.block_size,
        "memory_bytes": {p: memory_estimate(recipe, config, counts, p) for p in PLANNED},
        "memory_fitted_on": FITTED_ON,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    result["memory_outside_fit"] = [p for p, size in result["memory_bytes"].items() if outside_fit(p, size)]
    if recipe.data.examples:  # what packing left empty: block positions the training computes for nothing
        train = packed.stats["train"]
        result["examples"] = {
            "train": train["documents"],
            "blocks": train["blocks"],
            "padding": train["padding"],
            "truncated": train["truncated"],
        }
    if measure_steps > 0:
        seconds, peak = _measure_steps(recipe, measure_steps)
        result["seconds_per_step"] = seconds
        result["estimated_seconds"] = seconds * steps
        result["measured_memory_bytes"] = {planned_precision(recipe): peak}
    return result


def planned_precision(recipe: Recipe) -> str:
    """Which of the memory plan's bases (PLANNED) the recipe trains on: its base quantization, else bf16 for
    16-bit mixed precision, else fp32."""
    if recipe.quantization.mode != "none":
        return "nf4" if recipe.quantization.mode == "fp4" else recipe.quantization.mode  # fp4 plans as nf4
    return "bf16" if training_precision(recipe.training.precision) in ("bf16", "fp16") else "fp32"


def parameter_counts(recipe: Recipe, config) -> dict:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = attach_lora(AutoModelForCausalLM.from_config(config), recipe)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"total": total, "trainable": trainable, "share": trainable / total}


def memory_estimate(recipe: Recipe, config, counts: dict, precision: str) -> int:
    """Peak bytes of a training process over what it held before loading the model (see MEMORY_MODEL)."""
    base = counts["total"] - counts["trainable"]
    embeddings = config.vocab_size * config.n_embd + config.n_positions * config.n_embd
    linear = base - embeddings  # the layers' weights (the layer norms and biases: a rounding error here)
    weights = {
        "fp32": 4 * base,
        # fp32 master weights, and the bf16 copy of each linear weight that autocast makes and the backward keeps
        "bf16": 4 * base + 2 * linear,
        "int8": 4 * embeddings + 1 * linear,  # bitsandbytes keeps embeddings and the (tied) head in fp32
        "nf4": 4 * embeddings + FOUR_BIT_BYTES[recipe.quantization.double_quant] * linear,
    }[precision]
    lora = counts["trainable"] * 4 * 4  # weights, gradients, two Adam moments, all fp32
    per_token, per_score, fixed = MEMORY_MODEL[precision]
    layers = config.n_layer
    tokens = recipe.training.batch_size * recipe.data.block_size
    scores = recipe.training.batch_size * config.n_head * recipe.data.block_size**2
    step = layers * (tokens * config.n_embd * per_token + scores * per_score)
    if recipe.training.gradient_checkpointing:  # one layer's step memory plus each layer's saved input
        step = step // layers + layers * tokens * config.n_embd * 4
    if not head_loss.applies(recipe.training):  # the model's own loss: fp32 logits and their gradient
        step += tokens * config.vocab_size * 4 * 2
    return int(weights + lora + step + fixed)


def outside_fit(precision: str, estimate: int) -> bool:
    """Whether an estimate is mostly MEMORY_MODEL's fixed part, fitted at 124M parameters: then it says little
    of a model this small (and has been several times too high)."""
    return MEMORY_MODEL[precision][2] > estimate / 2


def _measure_steps(recipe: Recipe, steps: int) -> tuple[float, int]:
    """Median seconds of a few optimizer steps (forward, backward, AdamW) on random tokens, and the peak
    memory they added to this process (allocated on a GPU; resident on a CPU)."""
    before = resident_memory()
    model = attach_lora(load_base(recipe), recipe)
    device = "cuda" if torch.cuda.is_available() and recipe.quantization.mode == "none" else None  # else device_map
    if device:
        model.to(device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    shape = (recipe.training.batch_size, recipe.data.block_size)
    ids = torch.randint(0, model.config.vocab_size, shape, device=device or "cpu")
    precision = training_precision(recipe.training.precision)
    mixed = precision != "fp32"
    autocast = torch.autocast(device or "cpu", dtype=torch_dtype(precision) if mixed else None, enabled=mixed)
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
    peak = peak_memory("cuda") if device else peak_memory("cpu") - before
    return sorted(timings[1:])[len(timings[1:]) // 2], int(peak)
