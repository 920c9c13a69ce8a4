"""`gpt2-adapt bench`: training, memory, evaluation, generation and data preparation speed on this machine,
side by side with the two ways people train GPT-2 without the toolkit.

The model has the architecture of `setup.model` (a hub id or a folder: only its config and tokenizer are
read) with random weights: speed and memory do not depend on the weights. Every measurement runs in a
fresh process, so that each peak memory is its own (a CPU process's peak RSS never goes down) and one
failing case does not take the table with it. Training speed is timed from the end of the first step
(warm-up) to the end of the last, over `steps` steps, and the median of `repeats` runs is reported.

The cases:
- seed: the 2022 write-up's pipeline. Each line is tokenized and padded to the longest line of its
  `datasets.map` batch, batches are padded again by DataCollatorForLanguageModeling, and all of GPT-2 is
  fine-tuned in fp32. Only its non-padding tokens count as useful.
- peft, peft-bf16: plain peft + Trainer written the obvious way: run_clm's packing (concatenate, cut into
  blocks), the same LoRA as the toolkit's default (r=16 on c_attn), in fp32 and, where the machine has
  native bf16, with bf16 autocast (`bf16=True`): what a user who knows the libraries turns on with one flag.
- toolkit: `gpt2-adapt train` with the default recipe at the same batch shape; then with
  training.base_dropout=false, and the fp32, 8-bit and 4-bit (nf4) bases for the memory comparison.
- toolkit-busy and the plain script the targets compare against (bf16 where native), each run again
  while another program (a bare loop, started by the benchmark and stopped after the run) keeps one core
  busy; each busy run follows its quiet one, so that both see the same moment of a shared machine.

The plain script and the seed run as a script that never ran `gpt2-adapt` would: with OpenMP's default
wait policy (threads spin at barriers), which the command line changes for the toolkit's own processes.
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
from dataclasses import asdict
from pathlib import Path

import torch

from . import cases as measure
from .cases import MEMORY_CASES, PLAIN_PEFT, Setup, sync
from .report import BUSY, describe_machine


def run(setup: Setup, report=print) -> dict:
    """Every measurement of `setup.parts`, in fresh processes; `report` is called with each line of progress."""
    with tempfile.TemporaryDirectory(prefix="gpt2-adapt-bench-") as work:
        setup = Setup(**{**asdict(setup), "work": work})
        results: dict = {"setup": asdict(setup) | {"work": None}, "machine": _in_child(_machine, setup)}
        report(describe_machine(results["machine"]))
        _prepare(setup)
        # The toolkit's runs come first: eval uses the default run's adapter, generation switches between both.
        cases = []
        if {"training", "eval", "generation", "memory"} & set(setup.parts):
            cases.append(("toolkit", {}))
        if {"training", "generation"} & set(setup.parts):
            cases.append(("toolkit-nodropout", {"training.base_dropout": False}))
        busy = set()  # the cases measured again with one core busy
        if "training" in setup.parts:
            plain = plain_peft_cases(setup.device)
            cases += [(name, None) for name in plain] + [("seed", None)]
            busy = {"toolkit", plain[-1]}
        if "memory" in setup.parts:
            cases += list(MEMORY_CASES.items())
        training = results["training"] = {}
        for name, overrides in cases:
            repeats = 1 if name in MEMORY_CASES else setup.repeats  # memory does not vary from run to run
            runs, busy_runs = [], []
            for _ in range(repeats):
                runs.append(training_run(setup, name, overrides))
                if name in busy:
                    with one_core_busy():
                        busy_runs.append(training_run(setup, name + BUSY, overrides))
            for case, case_runs in ((name, runs), (name + BUSY, busy_runs)):
                if case_runs:
                    training[case] = _median_run(case_runs)
                    report(
                        f"  {case}: {training[case]['tokens_per_second']:,.1f} useful tokens/s, "
                        f"peak {training[case]['peak_memory'] / 2**30:.2f} GiB"
                    )
        if "memory" in setup.parts:
            results["plan"] = _in_child(measure.plan_case, setup)
        if "eval" in setup.parts:
            results["eval"] = [_in_child(measure.eval_case, setup, precision) for precision in ("fp32", "bf16")]
        if "generation" in setup.parts:
            results["generation"] = _in_child(measure.generation_case, setup)
        if "data" in setup.parts:
            results["data"] = _in_child(measure.data_case, setup)
        if "serving" in setup.parts:
            from .serving import serving_case

            results["serving"] = _in_child(serving_case, setup)
            report(
                "  serving: "
                + ", ".join(
                    f"{c} clients {r['tokens_per_second']:,.1f} tokens/s"
                    for c, r in results["serving"]["own_adapter"].items()
                )
            )
    return results


def training_run(setup: Setup, name: str, overrides, openmp_defaults: bool = False) -> dict:
    """One run of a training case in a fresh process. The plain script and the seed start as a script of
    their own would, with OpenMP's defaults; `openmp_defaults` starts a toolkit case that way too."""
    toolkit = name.removesuffix(BUSY) not in (*PLAIN_PEFT, "seed")
    return _in_child(measure.train_case, setup, name, overrides, openmp_defaults=openmp_defaults or not toolkit)


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


def plain_peft_cases(device: str) -> list[str]:
    """fp32, and bf16 where the device computes it natively (elsewhere bf16 is emulated: nobody would pick it)."""
    from ..hardware import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16() if device == "cpu" else torch.cuda.is_bf16_supported()
    return ["peft", "peft-bf16"] if native_bf16 else ["peft"]


# Imported once by the fork server, so that each measurement's fresh process starts without paying for them
# (about 8 s each on a 2-core machine); no model, data or thread pool exists in the server to be inherited.
PRELOADED = ["torch", "transformers", "peft", "datasets", "accelerate"]


def _in_child(function, *args, openmp_defaults: bool = False):
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
    import sys

    sys.stdout = sys.stderr  # the Trainer prints its summary; standard output is the table's (or the JSON's)
    measure.quiet()
    return function(*args)


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["tokens_per_second"])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [r["tokens_per_second"] for r in runs]
    return median


# ---------------------------------------------------------------- set-up (in this process)


def _prepare(setup: Setup) -> None:
    """The random-weight base folder, the training text and a small evaluation text."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..errors import param
    from ..modeling.tokenizer import tokenizer_from
    from ..sources.models import model_source

    measure.quiet()
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


def _machine(setup: Setup) -> dict:
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
