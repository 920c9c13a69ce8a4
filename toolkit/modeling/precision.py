"""Precision: one vocabulary for training and for loading a model to evaluate, generate or merge.

Training's `training.precision` is "auto", "fp32", "bf16" or "fp16": the fp32 weights are kept and autocast
runs the matrix products in 16 bits. Loading for inference takes "fp32", "bf16", "fp16" (the weights in that
dtype), "int8", "nf4" or "fp4" (the base's linear layers in 8 or 4 bits through bitsandbytes, computing in
fp32; the rest as stored).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config.recipe import LOAD_PRECISIONS, QUANTIZATION_MODES
from ..errors import ToolkitError, param
from ..hardware import cpu_has_native_bf16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class LoadPrecision:
    """How a model is loaded for inference: the dtype of its full-precision weights, and quantization."""

    name: str  # one of LOAD_PRECISIONS

    def __post_init__(self):
        if self.name not in LOAD_PRECISIONS:
            raise ToolkitError(f"{param('precision')}: must be one of {', '.join(LOAD_PRECISIONS)} (got {self.name!r})")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES.get(self.name, torch.float32)

    @property
    def quantization(self) -> str:
        return self.name if self.name in QUANTIZATION_MODES else "none"


def resolve_precision(precision: str) -> str:
    """ "auto" means bf16 (else fp16) mixed precision on CUDA, bf16 on CPUs that multiply bf16 natively
    (AVX512-BF16 or AMX, where it is much faster than fp32: BENCHMARKS.md), and fp32 on other CPUs, where bf16
    is emulated and slow."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"
