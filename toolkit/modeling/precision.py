"""Precision: one vocabulary for training and for loading a model to evaluate, generate or merge, and its one
translation to and from torch's dtypes.

Training's `training.precision` is "auto", "fp32", "bf16" or "fp16": the fp32 weights are kept and autocast
runs the matrix products in 16 bits. Loading for inference takes "fp32", "bf16", "fp16" (the weights in that
dtype), "int8", "nf4" or "fp4" (the base's linear layers in 8 or 4 bits through bitsandbytes, computing in
fp32; the rest as stored). A merged model is saved in one of the full precisions.

The words are declared in `toolkit.config.recipe`, a layer below this one, because a recipe is checked
against them; every other module takes them, and their meaning, from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.recipe import FULL_PRECISIONS, LOAD_PRECISIONS, PRECISIONS, QUANTIZATION_MODES
from ..errors import ToolkitError, param

if TYPE_CHECKING:
    import torch

__all__ = [
    "FULL_PRECISIONS",
    "LOAD_PRECISIONS",
    "PRECISIONS",
    "LoadPrecision",
    "checkpoint_precision",
    "precision_of",
    "torch_dtype",
    "training_precision",
]

# torch's names for the full precisions: its dtypes are torch.<name>, and a checkpoint's config.json
# declares its weights' dtype with them ("dtype": "float32").
TORCH_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a full precision: "bf16" -> torch.bfloat16."""
    import torch  # here, not above: the command line reads this module's words before torch is loaded

    return getattr(torch, TORCH_NAMES[precision])


def precision_of(dtype: torch.dtype | str | None) -> str | None:
    """The full precision of a torch dtype, or of its name as a checkpoint spells it ("float32",
    "torch.float32"); None for any other dtype."""
    name = str(dtype).removeprefix("torch.")
    return next((precision for precision, torch_name in TORCH_NAMES.items() if torch_name == name), None)


def checkpoint_precision(config) -> str:
    """The precision a checkpoint's config declares for its weights (transformers reads config.json's "dtype",
    or the older "torch_dtype", into `config.dtype`); fp32 when it declares none, or a dtype that is no full
    precision."""
    return precision_of(getattr(config, "dtype", None)) or "fp32"


def training_precision(setting: str) -> str:
    """The precision training runs at for a `training.precision` setting. "auto" means bf16 (else fp16) mixed
    precision on CUDA, bf16 on CPUs that multiply bf16 natively (AVX512-BF16 or AMX, where it is much faster
    than fp32: BENCHMARKS.md), and fp32 on other CPUs, where bf16 is emulated and slow."""
    if setting != "auto":
        return setting
    import torch

    from ..hardware import cpu_has_native_bf16

    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class LoadPrecision:
    """How a model is loaded for inference: the dtype of its full-precision weights, and quantization."""

    name: str  # one of LOAD_PRECISIONS

    def __post_init__(self):
        if self.name not in LOAD_PRECISIONS:
            raise ToolkitError(f"{param('precision')}: must be one of {', '.join(LOAD_PRECISIONS)} (got {self.name!r})")

    @property
    def dtype(self) -> torch.dtype:
        """Of the weights that are not quantized (a quantized base keeps the rest in fp32)."""
        return torch_dtype(self.name if self.name in FULL_PRECISIONS else "fp32")

    @property
    def quantization(self) -> str:
        return self.name if self.name in QUANTIZATION_MODES else "none"
