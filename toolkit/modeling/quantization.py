"""A quantized base through bitsandbytes: the `from_pretrained` arguments for each mode."""

from __future__ import annotations

import importlib.util
import os

import torch

from ..errors import ToolkitError


def bitsandbytes_missing(mode: str) -> str | None:
    """Why `mode` cannot run here, or None."""
    if mode != "none" and importlib.util.find_spec("bitsandbytes") is None:
        return f'"{mode}" needs bitsandbytes; pip install bitsandbytes, or use "none"'
    return None


def quantization_kwargs(mode: str) -> dict:
    """Extra `from_pretrained` arguments for a quantized base ({} for "none"). On CUDA each process puts the
    model on its own GPU (LOCAL_RANK under torchrun); bitsandbytes runs on the CPU too."""
    if mode == "none":
        return {}
    problem = bitsandbytes_missing(mode)
    if problem:
        raise ToolkitError(f"quantization.mode: {problem}")
    from transformers import BitsAndBytesConfig

    device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if torch.cuda.is_available() else None
    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": device_map}
