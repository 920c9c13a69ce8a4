"""Benchmark (not a test): training, evaluation and serving on a quiet machine and with one core kept busy
by another program, side by side, for docs/speed.md and BENCHMARKS.md. GPT-2 124M's architecture (random
weights), the real GPT-2 tokenizer and WikiText-2 validation from ../shared/data.

    .venv/bin/python -m benchmarks.busy [--steps 6] [--repeats 2] [--only training eval serving]
                                        [--variants before passive-2 default plain]

Each measurement is a fresh process (as `gpt2-adapt bench` runs them); every busy run follows its quiet twin
at once, so that both see the same moment of a shared machine, and the busy program (a bare loop) is started
before the run and stopped after it. Variants, to show what each part of the change does:
- "before": the toolkit as it was, 2 threads, OpenMP's default wait policy (threads spin at barriers);
- "passive, 2 threads": threads sleep at barriers (OMP_WAIT_POLICY=PASSIVE), the thread count fixed at 2;
- "default": the toolkit now: PASSIVE, and the threads its policy picks (toolkit/threads.py: every core
  where threads sleep);
- "plain peft + Trainer (bf16)": the plain script the targets compare against (comparisons.py), as its users run it.
Serving: `toolkit.serve` with 2 adapters, 4 clients each on its own, greedy. The load average of the machine
is printed with each row: other programs (other users) add to it.
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from toolkit.threads import prepare_openmp

if __name__ == "__main__":  # not in a spawned child, which imports this file as __mp_main__
    prepare_openmp()  # as the command line does, before torch is imported (the measured processes inherit it)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks import gpt2_124m

# variant: (label, recipe overrides, OpenMP defaults)
TRAINING = {
    "before": ("before: 2 threads, OpenMP's default wait", {"training.threads": 2}, True),
    "passive-2": ("passive, 2 threads", {"training.threads": 2}, False),
    "default": ("default (passive, threads by the policy)", {}, False),
}
PLAIN = "plain peft + Trainer (bf16), as users run it"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per run (batch 2 x 512)")
    parser.add_argument("--repeats", type=int, default=2, help="quiet/busy pairs per variant (median reported)")
    parser.add_argument(
        "--only", nargs="+", choices=["training", "eval", "serving"], default=["training", "eval", "serving"]
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[*TRAINING, "plain"],
        default=[*TRAINING, "plain"],
        help="the training variants to measure (evaluation and serving: always before and default)",
    )
    args = parser.parse_args()
    if not gpt2_124m.available():
        return 0

    from benchmarks import comparisons
    from toolkit.bench import runner as bench
    from toolkit.bench.cases import Setup, train_case

    with tempfile.TemporaryDirectory(prefix="bench-busy-") as folder:
        model = gpt2_124m.write_model(folder)
        setup = Setup(
            model=str(model),
            texts=[str(gpt2_124m.TEXT)],
            steps=args.steps,
            repeats=args.repeats,
            eval_tokens=8192,
            work=str(Path(folder) / "work"),
        )
        Path(setup.work).mkdir()
        bench.prepare(setup)
        print(
            f"GPT-2 124M architecture, batch {setup.batch_size} x {setup.block_size}, {setup.steps} timed steps; "
            f"median of {args.repeats} quiet/busy pairs; {len(os.sched_getaffinity(0))} cores"
        )
        print(
            f"{'':48s} {'quiet':>9s} {'busy':>9s} {'busy/quiet':>10s} {'threads (busy)':>14s}  load avg  runs "
            "quiet | busy"
        )

        def pairs(label: str, measure, unit: str = "tok/s") -> None:
            quiet, busy = [], []
            loads = []
            for _ in range(args.repeats):
                loads.append(os.getloadavg()[0])
                quiet.append(measure())
                with bench.one_core_busy():
                    busy.append(measure())
            q = statistics.median(r["rate"] for r in quiet)
            b = statistics.median(r["rate"] for r in busy)
            threads = "/".join(str(r.get("threads", "?")) for r in busy)
            runs = " | ".join(", ".join(f"{r['rate']:.0f}" for r in side) for side in (quiet, busy))
            print(
                f"{label:48s} {q:9.1f} {b:9.1f} {100 * b / q:9.0f}% {threads:>14s}  {statistics.mean(loads):7.1f}  "
                f"{runs} {unit}",
                flush=True,
            )

        if "training" in args.only or "eval" in args.only:
            for variant, (label, overrides, defaults) in TRAINING.items():

                def train(overrides=overrides, defaults=defaults):
                    r = bench.in_child(train_case, setup, "toolkit", overrides, openmp_defaults=defaults)
                    return {"rate": r["tokens_per_second"], "threads": r["threads"]}

                # evaluation scores the adapter the default run saved
                if variant in args.variants and "training" in args.only or variant == "default":
                    pairs(f"training, {label}", train)
            if "training" in args.only and "plain" in args.variants:
                plain = comparisons.plain_peft_cases(setup.device)[-1]

                def train_plain():  # as a script of its own starts: with OpenMP's defaults
                    r = bench.in_child(comparisons.plain_peft_case, setup, plain, openmp_defaults=True)
                    return {"rate": r["tokens_per_second"], "threads": r["threads"]}

                pairs(f"training, {PLAIN}", train_plain)
        variants = [TRAINING[v][0::2] for v in ("before", "default")]
        if "eval" in args.only:
            from toolkit.bench.cases import eval_case

            for label, defaults in variants:
                threads = 2 if defaults else 0

                def evaluate(threads=threads, defaults=defaults):
                    r = bench.in_child(eval_case, setup, "bf16", threads, openmp_defaults=defaults)
                    return {"rate": r["tokens_per_second"], "threads": r["threads"]}

                pairs(f"eval (bf16), {label}", evaluate)
        if "serving" in args.only:
            for label, defaults in variants:
                threads = 2 if defaults else 0
                pairs(
                    f"serving 4 clients, {label}",
                    lambda threads=threads, defaults=defaults: _serve(setup, threads, defaults),
                    unit="new tok/s",
                )
    return 0


def _serve(setup, threads: int, openmp_defaults: bool) -> dict:
    """4 clients, each on its own of 2 adapters (2 requests each), against a fresh server."""
    from toolkit.bench import serving

    work = Path(setup.work)
    store = work / "serving-store"
    if not store.exists():
        serving.make_adapters(work / "base", store, 2)
    prompt, room = serving.prompt_for(work / "base")
    # The server as it started before: OpenMP as torch loads it by default, whatever this process inherited.
    saved = os.environ.pop("OMP_WAIT_POLICY", None) if openmp_defaults else None
    try:
        server = serving.Server(
            store, work / "base", prompt, max_batch=4, threads=threads, openmp_defaults=openmp_defaults
        )
        with server:
            figures = serving.clients(server, ["adapter00", "adapter01"] * 2, min(32, room))
    finally:
        if saved is not None:
            os.environ["OMP_WAIT_POLICY"] = saved
    return {"rate": figures["tokens_per_second"], "threads": threads or "auto"}


if __name__ == "__main__":
    sys.exit(main())
