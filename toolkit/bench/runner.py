"""`gpt2-adapt bench`: training, memory, evaluation, generation, data preparation and serving speed on this
machine.

The model has the architecture of `setup.model` (a hub id or a folder: only its config and tokenizer are
read) with random weights: speed and memory do not depend on the weights. Every measurement runs in a
fresh process, so that each peak memory is its own (a CPU process's peak RSS never goes down) and one
failing case does not take the table with it. Training speed is timed from the end of the first step
(warm-up) to the end of the last, over `steps` steps, and the median of `repeats` runs is reported.

The training cases: `gpt2-adapt train` with the default recipe at the bench's batch shape, again while
another program (a bare loop, started by the benchmark and stopped after the run) keeps one core busy (each
busy run follows its quiet one, so that both see the same moment of a shared machine), then with
training.base_dropout=false, and the fp32, 8-bit and 4-bit (nf4) bases for the memory comparison. The
repository's benchmarks/comparisons.py adds other pipelines' rows through `measure(..., comparisons=...)`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import cases
from .cases import MEMORY_CASES, Setup, sync, train_case
from .report import BUSY, describe_machine


@dataclass(frozen=True)
class TrainingCase:
    """A row of the training table: function(setup, name, *args) -> its figures, in a fresh process per run."""

    name: str
    function: Callable[..., dict]  # a module's top-level function: the fresh process imports it
    args: tuple = ()
    once: bool = False  # one run, not the median of `repeats` (memory does not vary from run to run)
    busy: bool = False  # each run is followed by a twin, name + BUSY, with one core kept busy
    openmp_defaults: bool = False  # started as a script that never ran gpt2-adapt would (see `in_child`)


def measure(setup: Setup, report=print, comparisons: Sequence[TrainingCase] = ()) -> dict:
    """Every measurement of `setup.parts`, in fresh processes; `report` is called with each line of progress.
    `comparisons`: more training rows, measured after the toolkit's default runs and before the memory ones."""
    with tempfile.TemporaryDirectory(prefix="gpt2-adapt-bench-") as work:
        setup = replace(setup, work=work)
        results: dict = {"setup": asdict(setup) | {"work": None}, "machine": in_child(machine, setup)}
        report(describe_machine(results["machine"]))
        prepare(setup)
        parts = set(setup.parts)
        # The toolkit's runs come first: eval uses the default run's adapter, generation switches between both.
        training_cases = []
        if {"training", "eval", "generation", "memory"} & parts:
            training_cases.append(TrainingCase("toolkit", train_case, ({},), busy="training" in parts))
        if {"training", "generation"} & parts:
            training_cases.append(TrainingCase("toolkit-nodropout", train_case, ({"training.base_dropout": False},)))
        training_cases += comparisons
        if "memory" in parts:
            training_cases += [TrainingCase(name, train_case, (o,), once=True) for name, o in MEMORY_CASES.items()]
        results["training"] = {}
        for case in training_cases:
            for name, figures in training_rows(setup, case).items():
                results["training"][name] = figures
                report(
                    f"  {name}: {figures['tokens_per_second']:,.1f} useful tokens/s, "
                    f"peak {figures['peak_memory'] / 2**30:.2f} GiB"
                )
        if "memory" in parts:
            results["plan"] = in_child(cases.plan_case, setup)
        if "eval" in parts:
            results["eval"] = [in_child(cases.eval_case, setup, precision) for precision in ("fp32", "bf16")]
        if "generation" in parts:
            results["generation"] = in_child(cases.generation_case, setup)
        if "data" in parts:
            results["data"] = in_child(cases.data_case, setup)
        if "serving" in parts:
            from .serving import serving_case

            results["serving"] = in_child(serving_case, setup)
            report(
                "  serving: "
                + ", ".join(
                    f"{c} clients {r['tokens_per_second']:,.1f} tokens/s"
                    for c, r in results["serving"]["own_adapter"].items()
                )
            )
    return results


def training_rows(setup: Setup, case: TrainingCase) -> dict[str, dict]:
    """The case's row (the median run), and its busy twin's where it has one."""
    runs, busy_runs = [], []
    for _ in range(1 if case.once else setup.repeats):
        runs.append(in_child(case.function, setup, case.name, *case.args, openmp_defaults=case.openmp_defaults))
        if case.busy:
            with one_core_busy():
                busy_runs.append(
                    in_child(case.function, setup, case.name + BUSY, *case.args, openmp_defaults=case.openmp_defaults)
                )
    rows = {case.name: median_run(runs)}
    if busy_runs:
        rows[case.name + BUSY] = median_run(busy_runs)
    return rows


@contextlib.contextmanager
def one_core_busy(limit: float = 3600.0):
    """Another program keeping one core busy (a bare loop, as anything else running on a laptop would),
    stopped on leaving; it also stops by itself after `limit` seconds or when this process dies."""
    loop = (
        f"import os, time\nparent, end = {os.getpid()}, time.monotonic() + {limit}\n"
        "while time.monotonic() < end and os.getppid() == parent:\n    pass\n"
    )
    process = subprocess.Popen([sys.executable, "-c", loop])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


# Imported once by the fork server, so that each measurement's fresh process starts without paying for them
# (about 8 s each on a 2-core machine); no model, data or thread pool exists in the server to be inherited.
PRELOADED = ["torch", "transformers", "peft", "datasets", "accelerate"]


def in_child(function, *args, openmp_defaults: bool = False):
    """Run function(*args) in a new process (forked from a server that only imported the libraries: no state
    shared with this one or with another measurement) and return its result. `openmp_defaults`: where this
    process changed OpenMP's wait policy (the command line does), the child is a new interpreter without
    that change instead, since a forked one inherits OpenMP as the server loaded it."""
    from ..threads import wait_policy_set_here

    fresh = openmp_defaults and wait_policy_set_here()
    context = multiprocessing.get_context("spawn" if fresh else "forkserver")
    if not fresh:
        context.set_forkserver_preload(PRELOADED)
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        policy = os.environ.pop("OMP_WAIT_POLICY") if fresh else None
        try:
            future = pool.submit(_child, function, *args)  # the process starts here, with this environment
        finally:
            if policy is not None:
                os.environ["OMP_WAIT_POLICY"] = policy
        return future.result()


def _child(function, *args):
    sys.stdout = sys.stderr  # the Trainer prints its summary; standard output is the table's (or the JSON's)
    cases.quiet()
    return function(*args)


def median_run(runs: list[dict]) -> dict:
    """The run of median speed, with every run's speed."""
    ordered = sorted(runs, key=lambda r: r["tokens_per_second"])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [r["tokens_per_second"] for r in runs]
    return median


# ---------------------------------------------------------------- set-up (in this process)


def prepare(setup: Setup) -> None:
    """The random-weight base folder, the training text and a small evaluation text."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..errors import param
    from ..modeling.tokenizer import tokenizer_from
    from ..sources.models import model_source

    cases.quiet()
    work = Path(setup.work)
    source = model_source(setup.model, "main", key=param("model"))
    config = AutoConfig.from_pretrained(**source.from_pretrained())
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "base")
    tokenizer_from(source, setup.model, key=param("model")).save_pretrained(work / "base")
    lines = [line for path in setup.texts for line in Path(path).read_text(encoding="utf-8").splitlines()]
    (work / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Training's own evaluations (base and final) are not timed; a few blocks keep them short.
    (work / "eval.txt").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the machine


def machine(setup: Setup) -> dict:
    """The device, its threads, and the matrix-product peaks the training figures are measured against."""
    return {
        "device": setup.device,
        "name": torch.cuda.get_device_name() if setup.device == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemm_peak_flops": {
            "bf16": _gemm_peak(torch.bfloat16, setup.device),
            "fp32": _gemm_peak(torch.float32, setup.device),
        },
    }


def _gemm_peak(dtype: torch.dtype, device: str) -> float:
    """The best FLOP/s of square matrix products: the peak the training figures are measured against."""
    best = 0.0
    for n in (1024, 2048, 4096) if device == "cpu" else (4096, 8192):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(4):
            sync(device)
            started = time.perf_counter()
            a @ b
            sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
