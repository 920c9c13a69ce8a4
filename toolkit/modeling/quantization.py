"""A quantized base through bitsandbytes: the `from_pretrained` arguments for each mode.

"int8" is LLM.int8() (8-bit weights, outliers in 16 bits); "nf4" and "fp4" are 4-bit blocks of 64 weights
(QLoRA's normal float, or plain float) that compute in `compute_dtype` and, with double quantisation,
quantize the blocks' scales too. Embeddings, layer norms and the output layer stay in full precision.
"""

from __future__ import annotations

import importlib.util

import torch

from ..config.recipe import FOUR_BIT
from ..distributed import local_rank
from ..errors import ToolkitError


def bitsandbytes_missing(mode: str) -> str | None:
    """Why `mode` cannot run here, or None."""
    if mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
        return f'"{mode}" needs bitsandbytes; pip install bitsandbytes, or use "none"'
    return None


def quantization_kwargs(mode: str, compute_dtype: torch.dtype = torch.float32, double_quant: bool = True) -> dict:
    """Extra `from_pretrained` arguments for a quantized base ({} for "none"). On CUDA each process puts the
    model on its own GPU (LOCAL_RANK under torchrun); bitsandbytes runs on the CPU too."""
    if mode == "none":
        return {}
    problem = bitsandbytes_missing(mode)
    if problem:
        raise ToolkitError(f"quantization.mode: {problem}")
    from transformers import BitsAndBytesConfig

    if mode in FOUR_BIT:
        config = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=mode,
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=double_quant,
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    device_map = {"": local_rank()} if torch.cuda.is_available() else None
    return {"quantization_config": config, "device_map": device_map}


def keep_trainable(model) -> None:
    """Stop bitsandbytes from packing a 4-bit base's weights for CPU inference. On a CPU with AVX512-BF16,
    a Linear4bit layer that runs forward-only (eval mode, no gradient) repacks its weights in place, and a
    packed layer cannot be trained any more (bitsandbytes 0.50: the next training step fails). Training
    scores its evaluation text between steps, so the base it trains must stay unpacked."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
