"""torchrun, in one place: what it launched (this process's rank, how many there are), the process group's
start and end, and the order in which ranks do what only one of them may do first.

Every other module asks here; none reads RANK, WORLD_SIZE or LOCAL_RANK itself, nor starts or ends a
process group (tests/test_architecture.py checks this).
"""

from __future__ import annotations

import contextlib
import datetime
import os

# torch is imported inside the functions: the command line asks is_main_process() before torch may load
# (it sets OpenMP's wait policy first, see toolkit/threads.py).
# Harness tasks run on the first process while the others wait at the end: longer than the 30-minute default.
GROUP_TIMEOUT = datetime.timedelta(hours=24)


def launched_world() -> int:
    """How many processes torchrun (or accelerate launch) started; 1 when run alone."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def launched_rank() -> int:
    """This process's rank among them (0 alone), known before any process group exists."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's GPU on its machine (0 alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """The process that reports, writes the store and speaks for all (rank 0, or the only one)."""
    return launched_rank() == 0


def grouped() -> bool:
    import torch

    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process() -> tuple[int, int]:
    """This process's rank and the number of processes under torch.distributed; (0, 1) otherwise."""
    import torch

    if grouped():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@contextlib.contextmanager
def launched():
    """Within: the process group torchrun asked for (WORLD_SIZE > 1), gloo on CPUs, nccl on GPUs, each
    process on its own GPU; nothing when run alone or when a group already exists. Yields the rank."""
    import torch

    if launched_world() <= 1 or grouped():
        yield process()[0]
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=GROUP_TIMEOUT)
    try:
        yield torch.distributed.get_rank()
        torch.distributed.barrier()  # every process done (the first may have run harness tasks alone)
    finally:
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def group_closed_at_end():
    """Within: whatever starts a process group (the Trainer does); at the end it is torn down, so that every
    rank exits cleanly (without it, an exit at interpreter shutdown crashed now and then)."""
    import torch

    try:
        yield
    finally:
        if grouped():
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def rank_zero_first():
    """Within: rank 0 runs the block, then the other ranks do (under torchrun); alone, just the block.
    accelerate's PartialState starts the process group, but on a CPU it counts one process
    (DistributedType.NO), so its main_process_first and wait_for_everyone wait for nobody; the barrier is
    torch.distributed's own."""
    import torch
    from accelerate import PartialState

    PartialState()
    if grouped() and not is_main_process():
        torch.distributed.barrier()
    yield
    if grouped() and is_main_process():
        torch.distributed.barrier()
