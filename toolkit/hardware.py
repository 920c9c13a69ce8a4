"""What the machine's CPU can do, for the choices that depend on it (mixed precision)."""

from __future__ import annotations

import torch


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products much faster than fp32 (elsewhere bf16 is emulated, slow)."""
    # torch.cpu's feature probes are private; a torch without them is treated as a CPU without bf16.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)
