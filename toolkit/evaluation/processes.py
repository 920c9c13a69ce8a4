"""Evaluation under `torchrun`: one process per rank, each scoring its share of the windows.

The scorer shards windows whenever torch.distributed is initialised (training's Trainer initialises it
itself); `gpt2-adapt eval` launched by torchrun calls `launched()` to start the process group and to end
it cleanly (a process group left open can crash the interpreter at exit).
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch

# Harness tasks run on the first process while the others wait at the end: longer than the 30-minute default.
GROUP_TIMEOUT = datetime.timedelta(hours=24)


def process() -> tuple[int, int]:
    """This process's rank and the number of processes under torch.distributed; (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def launched():
    """Within: the process group torchrun asked for (WORLD_SIZE > 1), gloo on CPUs, nccl on GPUs, each
    process on its own GPU; nothing when run alone or when a group already exists. Yields the rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or torch.distributed.is_initialized():
        yield process()[0]
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    try:
        yield torch.distributed.get_rank()
        torch.distributed.barrier()  # every process done (the first may have run harness tasks alone)
    finally:
        torch.distributed.destroy_process_group()
