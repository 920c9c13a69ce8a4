"""How many threads torch computes with, chosen from this machine's cores and how busy other programs keep
them; and how those threads wait for each other.

On a CPU every operation of a training step (thousands of them, many small: dropout masks, casts, the LoRA
products) is an OpenMP parallel region whose threads meet at a barrier at its end. A region is as slow as
its slowest thread, and a thread that shares its core with another busy program waits for its turn. By
default the thread that reaches the barrier first spins for it, burning the CPU time the late thread and
the other program need: on a loaded 2-core machine that made a training step 2-4x slower than on one
thread (docs/speed.md). So:
- the threads sleep at barriers instead of spinning (OMP_WAIT_POLICY=PASSIVE, which the command line sets
  before torch loads OpenMP, unless the user set it; a Python program sets it before importing torch);
- then a task runs on one thread per core, busy or not; where the threads spin (the policy could not be
  set), on one thread per core that other programs leave free, the load measured from /proc/stat (our own
  CPU time taken out), and training measures again as it goes and follows the load.
A number of threads the user asks for (recipe key `training.threads`, a threads option, OMP_NUM_THREADS)
is used as given. The log line says what was chosen and why.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.3  # how long the first measurement of the load watches the machine
FOLLOW_SECONDS = 2.0  # the shortest window over which a long task measures the load again (ticks are 10 ms)
WAIT_POLICY = "PASSIVE"


_set_here = False  # whether prepare_openmp set the wait policy in this process


def prepare_openmp() -> None:
    """Make OpenMP's threads sleep at barriers rather than spin. OpenMP reads the setting once, when torch
    loads it: this only works before `import torch`, and leaves a setting the user made alone."""
    global _set_here
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
        _set_here = True


def wait_policy_set_here() -> bool:
    """Whether prepare_openmp set OMP_WAIT_POLICY in this process (the user had not)."""
    return _set_here


@dataclass(frozen=True)
class Load:
    """What the machine offers this process: its cores, and how many of them other programs keep busy."""

    cores: int  # CPUs this process may run on
    busy: float  # cores' worth of CPU time other programs used during the sample (niced programs excepted)


@dataclass(frozen=True)
class ThreadChoice:
    task: str  # "training", "evaluation" or "serving"
    threads: int
    reason: str  # what it was chosen from, e.g. "2 cores, 1 busy"
    from_load: bool = True  # chosen from the load (and free to follow it), not set by the user

    def __str__(self) -> str:
        return f"{self.reason}: {self.task} on {self.threads} thread{'s' if self.threads != 1 else ''}"


def choose(task: str, load: Load, requested: int = 0, omp_num_threads: str = "", sleeping: bool = True) -> ThreadChoice:
    """The threads for `task`. `requested` > 0 (the recipe's key or a threads option) is used as given, then
    OMP_NUM_THREADS (its value given here), the standard setting torch itself obeys. Otherwise: where the
    threads sleep at barriers (`sleeping`: OMP_WAIT_POLICY=PASSIVE), one per core, busy or not: a waiting
    thread costs nothing, and the scheduler gives each thread its share of a crowded machine, so fewer
    threads would only get less of it (measured: docs/speed.md). Where they spin, one per core that other
    programs leave free (a core counts as busy from half a core's use), at least one: a spinning thread on a
    shared core burns the time the others need."""
    cores = _cores(load.cores)
    if requested > 0:
        return ThreadChoice(task, requested, f"{cores}, {requested} asked for", from_load=False)
    if omp_num_threads.strip().isdigit() and int(omp_num_threads) > 0:
        return ThreadChoice(
            task, int(omp_num_threads), f"{cores}, OMP_NUM_THREADS={omp_num_threads.strip()}", from_load=False
        )
    busy = min(load.cores, int(load.busy + 0.5))
    described = f"{cores}, {busy or 'none'} busy"
    if sleeping:
        return ThreadChoice(task, load.cores, f"{described}, threads sleep at barriers")
    return ThreadChoice(task, max(1, load.cores - busy), f"{described}, threads spin at barriers")


def threads_sleep() -> bool:
    """Whether OpenMP's threads sleep at barriers in this process: the wait policy torch loaded OpenMP with
    (read from the environment, which prepare_openmp sets before that)."""
    return os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == WAIT_POLICY


def _cores(n: int) -> str:
    return f"{n} core{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Sample:
    """Counters read at one moment."""

    wall: float  # seconds, monotonic
    machine: float | None  # busy CPU seconds of the cores this process may use, since boot (None: unknown)
    own: float  # CPU seconds this process has used, all its threads


def load_between(before: Sample, after: Sample, cores: int) -> Load:
    """Other programs' load between two samples: the cores' busy time less our own, over the time passed."""
    elapsed = after.wall - before.wall
    if before.machine is None or after.machine is None or elapsed <= 0:
        return Load(cores, 0.0)
    others = (after.machine - before.machine) - (after.own - before.own)
    return Load(cores, max(0.0, others / elapsed))


def busy_seconds(stat: str, cpus: list[int], ticks_per_second: int) -> float | None:
    """CPU seconds that `cpus` spent on user, system and interrupt work since boot, from /proc/stat's text
    (None if it has none of them). Niced work is left out: a niced program (a background build, say) yields
    its core to ours."""
    wanted = {f"cpu{n}" for n in cpus}
    ticks, found = 0, False
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] in wanted:  # cpuN user nice system idle iowait irq softirq steal ...
            user, _nice, system, _idle, _iowait, irq, softirq = map(int, fields[1:8])
            ticks, found = ticks + user + system + irq + softirq, True
    return ticks / ticks_per_second if found else None


class LoadMeter:
    """Measures other programs' load between two calls, from /proc/stat (Linux); elsewhere the load reads
    as none and every core is used."""

    def __init__(self, stat: Path = Path("/proc/stat")):
        self.stat = stat
        self.cpus = (
            sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
        )
        self.last = self.sample()

    def sample(self) -> Sample:
        times = os.times()
        try:
            machine = busy_seconds(self.stat.read_text(), self.cpus, os.sysconf("SC_CLK_TCK"))
        except (OSError, ValueError):
            machine = None
        return Sample(time.monotonic(), machine, times.user + times.system)

    def elapsed(self) -> float:
        return time.monotonic() - self.last.wall

    def measure(self) -> Load:
        """The load since the previous call (or since the meter was made)."""
        now = self.sample()
        load, self.last = load_between(self.last, now, len(self.cpus)), now
        return load


def machine_load(seconds: float = SAMPLE_SECONDS) -> Load:
    """The load over the next `seconds` (this process idle meanwhile)."""
    meter = LoadMeter()
    time.sleep(seconds)
    return meter.measure()


def set_threads(task: str, requested: int = 0) -> ThreadChoice:
    """Choose the threads for `task` (measuring the load unless `requested` > 0), give them to torch, log
    the choice and why."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    fixed = requested > 0 or omp.strip().isdigit()
    load = Load(len(LoadMeter().cpus), 0.0) if fixed else machine_load()
    choice = choose(task, load, requested, omp, threads_sleep())
    apply(choice)
    log.info("%s", choice)
    return choice


def apply(choice: ThreadChoice) -> None:
    import torch

    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)


class ThreadGovernor:
    """Follows the load during a long task: `update()` (called, say, at the end of each training step)
    measures the load since the previous call and moves torch to the threads it now calls for."""

    def __init__(self, task: str, first: ThreadChoice, meter: LoadMeter | None = None, sleeping: bool | None = None):
        self.task, self.current = task, first
        self.meter = meter or LoadMeter()
        self.sleeping = threads_sleep() if sleeping is None else sleeping

    def update(self) -> ThreadChoice | None:
        """The new choice when it changed (applied and logged), else None. Measures over at least
        FOLLOW_SECONDS: a shorter window is mostly noise."""
        if self.meter.elapsed() < FOLLOW_SECONDS:
            return None
        choice = choose(self.task, self.meter.measure(), sleeping=self.sleeping)
        if choice.threads == self.current.threads:
            return None
        self.current = choice
        apply(choice)
        log.info("the load changed (%s)", choice)
        return choice
