"""What the machine can do and what a process holds: the CPU's bf16 support (for mixed precision) and the
memory probes that plan, bench and the benchmark scripts read."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products much faster than fp32 (elsewhere bf16 is emulated, slow)."""
    # torch.cpu's feature probes are private; a torch without them is treated as a CPU without bf16.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resident_memory(pid: int | None = None) -> int:
    """A process's resident set in bytes (this one by default); 0 where the system does not say (not Linux)."""
    try:  # resident pages x page size
        pages = Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1]
        return int(pages) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def peak_resident_memory() -> int:
    """This process's peak resident set in bytes. It never goes down: a measurement of its own needs a fresh
    process."""
    import resource  # Unix only

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def memory_in_use(device: str) -> int:
    """Bytes held now: allocated on the GPU for "cuda", else this process's resident set."""
    return torch.cuda.memory_allocated() if device == "cuda" else resident_memory()


def peak_memory(device: str) -> int:
    """Peak bytes so far: allocated on the GPU for "cuda", else this process's peak resident set."""
    return torch.cuda.max_memory_allocated() if device == "cuda" else peak_resident_memory()
