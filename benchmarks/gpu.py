"""Benchmark (not a test): everything that needs CUDA, in one go, into one report. Run it as benchmarks/gpu.sh:

    benchmarks/gpu.sh [--model FOLDER] [--text FILE] [--out gpu-report.md] [--quick]
                      [--block-size N] [--batch-size N] [--steps N] [--repeats N]

On a CUDA GPU: training tokens/s and model FLOPs utilisation (MFU) of the default recipe at batch 8 x 1024
(bf16 on an H100-class GPU), also with training.base_dropout = false, and with an int8 and an nf4 base (bf16)
with their peak memory against the default's; evaluation and generation speed; the serving table; the
projected time of one epoch of WikiText-103 against the 5-minute target; and the targets. Sized to take about
5 minutes on an H100 (an estimate: not yet run on one). Every measurement runs in a fresh process
(toolkit.bench's machinery), on the architecture of --model with random weights (default: GPT-2 124M's config
and the real GPT-2 tokenizer from ../shared/data), trained on --text (default: WikiText-2 validation from
../shared/data, else the built-in text that `gpt2-adapt bench` uses). The report is written to --out (rewritten
after each measurement, so that a run stopped by a time limit leaves what it measured) and printed.

Without CUDA it runs short (as --quick does: tiny shapes, 2 steps, 1 run, all in the script's own process,
since starting one that imports torch and transformers costs more than a tiny measurement), and the GPU rows
(the quantized bases, serving, the GPU targets) are absent; the report says so. Exit status: 0; 1 when a
measurement failed (the report says which, and the others still ran); 2 for bad options (one error line each,
nothing run).
"""

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local

from benchmarks import gpt2_124m

# Shapes: batch_size x block_size tokens per step, `steps` timed steps after a warm-up step, `repeats` runs.
FULL = {"block_size": 1024, "batch_size": 8, "steps": 10, "repeats": 3, "eval_tokens": 65536, "new_tokens": 64}
QUICK = {"block_size": 32, "batch_size": 2, "steps": 2, "repeats": 1, "eval_tokens": 512, "new_tokens": 8}
QUICK_EVAL_LINES = 20  # of the text, for training's own evaluations (bench takes 200)
WIKITEXT_103_TOKENS = 120_000_000  # one epoch of its training split, GPT-2 tokens (about)
EPOCH_TARGET_SECONDS = 300  # on one H100-class GPU: at least 400k tokens/s
NOMINAL_BF16 = {"H100": 989e12, "H200": 989e12}  # dense bf16 peak, FLOP/s (the H200 has the H100's compute)
STARTED = time.perf_counter()  # the report's wall time, and the progress lines'
NO_CUDA = "no CUDA device: the GPU rows are absent; run benchmarks/gpu.sh on a GPU machine"


@dataclass(frozen=True)
class Case:
    """One training run of `gpt2-adapt train` (toolkit.bench.cases.train_case)."""

    name: str  # the bench's name: eval scores the adapter of "toolkit", generation switches to "toolkit-nodropout"
    label: str
    overrides: dict  # recipe settings on top of the default recipe
    gpu_only: bool = False  # the quantized bases: bitsandbytes' CPU path is other code (and slow), not this report's


CASES = (
    Case("toolkit", "default recipe", {}),
    Case("toolkit-nodropout", "training.base_dropout = false", {"training.base_dropout": False}),
    Case("toolkit-int8-bf16", "int8 base", {"quantization.mode": "int8", "training.precision": "bf16"}, True),
    Case("toolkit-nf4-bf16", "nf4 base", {"quantization.mode": "nf4", "training.precision": "bf16"}, True),
)


@dataclass(frozen=True)
class Inputs:
    """What the benchmark runs on, and how the report names it."""

    model: Path  # a folder with a GPT-2 config and tokenizer (the weights are drawn at random)
    model_note: str
    text: Path  # one document per line
    text_note: str


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Everything that needs CUDA, in one go, into one report; on a CPU "
        "it runs short, without the GPU rows."
    )
    parser.add_argument(
        "--model", help="a GPT-2 model folder (config and tokenizer; default: GPT-2 124M from ../shared/data)"
    )
    parser.add_argument(
        "--text",
        help="training text, one document per line (default: WikiText-2 validation "
        "from ../shared/data, else the built-in text)",
    )
    parser.add_argument("--out", default="gpu-report.md", help="the report (Markdown; default: gpu-report.md here)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps, 1 run (always without CUDA)")
    parser.add_argument(
        "--block-size",
        type=int,
        help=f"tokens per sequence (default {FULL['block_size']}, quick {QUICK['block_size']})",
    )
    parser.add_argument(
        "--batch-size", type=int, help=f"sequences per step (default {FULL['batch_size']}, quick {QUICK['batch_size']})"
    )
    parser.add_argument(
        "--steps", type=int, help=f"timed training steps per run (default {FULL['steps']}, quick {QUICK['steps']})"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        help=f"runs per measurement, median reported (default {FULL['repeats']}, quick {QUICK['repeats']})",
    )
    args = parser.parse_args()
    problems = _problems(args)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2

    import torch

    from toolkit.bench.cases import Setup

    gpu = torch.cuda.is_available()
    quick = args.quick or not gpu
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as scratch:
        inputs = _inputs(args, Path(scratch))
        shapes = QUICK if quick else FULL
        chosen = {
            key: getattr(args, key)
            for key in ("block_size", "batch_size", "steps", "repeats")
            if getattr(args, key) is not None
        }
        sizes = shapes | {"block_size": min(shapes["block_size"], _context(inputs.model))} | chosen
        setup = Setup(model=str(inputs.model), texts=[str(inputs.text)], work=str(Path(scratch) / "work"), **sizes)
        Path(setup.work).mkdir()

        def save(results: dict, finished: bool = False) -> str:
            """The report so far, rewritten after each measurement: a run cut short by a time limit leaves one."""
            results["seconds"] = time.perf_counter() - STARTED
            report = write_report(results, inputs, gpu, quick, finished)
            partial = Path(args.out + ".partial")  # then renamed: a run killed while writing leaves the last one
            partial.write_text(report + "\n", encoding="utf-8")
            partial.replace(args.out)
            return report

        results = measure(setup, gpu, quick, save)
        report = save(results, finished=True)
    print(report)
    print(f"\n(written to {args.out})", file=sys.stderr)
    return 1 if results["failed"] else 0


# ---------------------------------------------------------------- input


def _problems(args) -> list[str]:
    """Everything wrong with the options, found before anything is measured: one line each."""
    problems, context = [], None
    if args.model is not None:
        if (Path(args.model) / "config.json").is_file():
            context = _context(Path(args.model))
        else:
            problems.append(
                f"--model: no model folder {args.model!r} (a folder with a GPT-2 config.json and tokenizer); pass one"
            )
    elif gpt2_124m.VOCAB.is_file():
        context = 1024  # GPT2Config()'s
    else:
        problems.append(
            f"--model: none given, and the GPT-2 tokenizer of the default (GPT-2 124M) is not on this "
            f"machine ({gpt2_124m.SHARED}); pass --model FOLDER (a GPT-2 config.json and tokenizer)"
        )
    if context and args.block_size is not None and args.block_size > context:
        problems.append(
            f"--block-size: {args.block_size} is longer than the model's context ({context} positions); "
            f"pass at most {context}"
        )
    if args.text is not None:
        from toolkit.cli.bench_cmd import text_problem  # the same check and words as `gpt2-adapt bench --text`

        problem = text_problem(args.text)
        if problem:
            problems.append(problem)
    out = Path(args.out).resolve().parent
    if not out.is_dir():
        problems.append(f"--out: no such folder {str(out)!r}; pass a path in an existing folder")
    for name, value, least in (
        ("--block-size", args.block_size, 2),
        ("--batch-size", args.batch_size, 1),
        ("--steps", args.steps, 1),
        ("--repeats", args.repeats, 1),
    ):
        if value is not None and value < least:
            problems.append(f"{name}: must be at least {least} (got {value})")
    return problems


def _context(folder: Path) -> int:
    """The model's positions, from its config.json (GPT-2 names them n_positions)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    return config.get("n_positions") or config.get("max_position_embeddings") or 1024


def _inputs(args, scratch: Path) -> Inputs:
    if args.model:
        model, model_note = Path(args.model), f"the architecture of {args.model} (its config and tokenizer)"
    else:  # config and tokenizer only: the benchmark draws the weights
        model, model_note = gpt2_124m.write_model(scratch), "GPT-2 124M (GPT2Config(), the GPT-2 tokenizer)"
    if args.text:
        text, text_note = Path(args.text), args.text
    elif gpt2_124m.TEXT.is_file():
        text, text_note = gpt2_124m.TEXT, "WikiText-2 validation (../shared/data)"
    else:
        from toolkit.sources.builtin import python_docs

        text = python_docs()["train"]
        text_note = (
            "no --text and no ../shared/data: the built-in text (Python's documentation topics, written "
            "from this Python; what `gpt2-adapt bench` trains on)"
        )
    return Inputs(model, model_note + ", random weights", text, text_note)


# ---------------------------------------------------------------- measuring


def measure(setup, gpu: bool, quick: bool, save) -> dict:
    """Every measurement, each in a fresh process (a quick run: all in this one, since starting a process that
    imports torch and transformers costs more than a tiny measurement); the results in toolkit.bench's shape (so
    that its `targets` reads them), plus "failed": one line per measurement that raised (the others still run).
    `save(results)` is called after each measurement."""
    from toolkit.bench import cases
    from toolkit.bench import runner as bench
    from toolkit.bench.report import describe_machine

    results = {"setup": asdict(setup) | {"work": None}, "training": {}, "failed": []}

    def attempt(what: str, function, *args):
        try:
            return _in_this_process(function, *args) if quick else bench.in_child(function, *args)
        except Exception as err:  # noqa: BLE001 - recorded in the report; the rest still runs
            message = str(err).strip().splitlines()
            results["failed"].append(f"{what}: {type(err).__name__}: {message[0] if message else ''}")
            _tell(f"  failed: {results['failed'][-1]}")
            return None

    results["machine"] = _in_this_process(bench.machine, setup) if quick else bench.in_child(bench.machine, setup)
    _tell(describe_machine(results["machine"]))
    bench.prepare(setup)
    if quick:  # training scores eval.txt before and after, untimed: in a quick run that was most of its time
        eval_text = Path(setup.work) / "eval.txt"
        eval_text.write_text(
            "\n".join(eval_text.read_text(encoding="utf-8").splitlines()[:QUICK_EVAL_LINES]) + "\n", encoding="utf-8"
        )
    _tell("prepared the base and the text")
    for case in CASES:
        if case.gpu_only and not gpu:
            continue
        repeats = 1 if case.gpu_only else setup.repeats  # a quantized base is here for its memory: it does not vary
        runs = []
        while len(runs) < repeats and (run := attempt(case.label, cases.train_case, setup, case.name, case.overrides)):
            runs.append(run)
        if len(runs) == repeats:
            results["training"][case.name] = bench.median_run(runs)
            _tell(f"  {case.label}: {results['training'][case.name]['tokens_per_second']:,.0f} tokens/s")
        save(results)
    trained = results["training"]
    if "toolkit" in trained:
        evaluation = attempt("evaluation", cases.eval_case, setup, "bf16")
        if evaluation:
            results["eval"] = [evaluation]
            _tell(f"  evaluation: {evaluation['tokens_per_second']:,.0f} tokens/s")
        save(results)
    if "toolkit" in trained and "toolkit-nodropout" in trained:
        results["generation"] = attempt("generation", cases.generation_case, setup)
        save(results)
    if gpu:
        from toolkit.bench.serving import serving_case

        results["serving"] = attempt("serving", serving_case, setup)
    return results


def _in_this_process(function, *args):
    """What toolkit.bench runs in a child, run here: library notices quiet, and nothing printed on standard
    output, which is the report's (the Trainer prints a summary)."""
    from toolkit.bench.cases import quiet

    with contextlib.redirect_stdout(sys.stderr):
        quiet()
        return function(*args)


def _tell(line: str) -> None:
    """Progress on standard error, with the time since the start: a GPU run has a time limit."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {line}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the report


def write_report(results: dict, inputs: Inputs, gpu: bool, quick: bool, finished: bool = True) -> str:
    from benchmarks.targets import targets
    from toolkit.bench.report import LORA_FLOPS_PER_PARAMETER, describe_machine, flops, serving_table

    s, machine, trained = results["setup"], results["machine"], results["training"]
    measured_peak = machine["gemm_peak_flops"]["bf16"]
    nominal = next((peak for name, peak in NOMINAL_BF16.items() if name in machine["name"]), None)
    default = trained.get("toolkit")
    runs = f"median of {_runs(s['repeats'])}" + (" (the int8 and nf4 rows: 1 run)" if gpu else "")
    out = [
        "# gpt2-adapt: benchmarks/gpu.sh",
        "",
        f"- machine: {describe_machine(machine)}",
        f"- model: {inputs.model_note}" + (f"; {default['parameters']:,} parameters" if default else ""),
        f"- text: {inputs.text_note}",
        f"- batch {s['batch_size']} x {s['block_size']} tokens; training timed over {s['steps']} steps after a "
        f"warm-up step, {runs}; "
        + ("all in one process (a quick run)" if quick else "each measurement in a fresh process"),
        f"- wall time: {_duration(results['seconds'])}",
        "",
    ]
    if not finished:
        out += ["**unfinished: the report so far, rewritten after each measurement**", ""]
    if not gpu:
        out += [f"**{NO_CUDA}**", ""]
    if quick:
        out += [
            (
                "**quick run: tiny shapes, few steps; the figures show that every part runs, not what this machine "
                "can do, and no target is judged**"
            ),
            "",
        ]

    out += [
        "## Training: `gpt2-adapt train`, the default adapter (LoRA r=16 on c_attn)",
        "",
        "| run | precision | tokens/s | MFU | "
        + ("of nominal peak | " if nominal else "")
        + "peak memory | peak vs default |",
        "| --- | --- | ---: | ---: | " + ("---: | " if nominal else "") + "---: | ---: |",
    ]
    for case in CASES:
        if case.name not in trained:
            continue
        r = trained[case.name]
        versus = f"{100 * r['peak_memory'] / default['peak_memory']:.0f}%" if default and case.gpu_only else ""
        out.append(
            f"| {case.label} | {r['precision']} | {r['tokens_per_second']:,.0f} | "
            f"{100 * flops(r) / measured_peak:.3g}% | "
            + (f"{100 * flops(r) / nominal:.3g}% | " if nominal else "")
            + f"{r['peak_memory'] / 2**30:.2f} GiB | {versus} |"
        )
    out += [
        "",
        f"MFU: {LORA_FLOPS_PER_PARAMETER} FLOPs per base parameter per token (forward 2, backward to the "
        "activations 2: the frozen base has no weight gradients) x parameters x tokens/s, over the bf16 matrix "
        f"product peak measured in this run ({measured_peak / 1e12:.3g} TFLOP/s)"
        + (
            f"; of nominal peak: over the dense bf16 peak of the {machine['name']} ({nominal / 1e12:,.0f} TFLOP/s)"
            if nominal
            else ""
        )
        + ". Peak memory: "
        + ("`torch.cuda.max_memory_allocated`" if machine["device"] == "cuda" else "the process's peak RSS")
        + (" (a quick run measures every row in one process: its peak so far)" if quick else "")
        + "; peak vs default: against the default recipe's.",
    ]
    if not gpu:
        out.append("The int8 and nf4 rows (quantized bases) are GPU rows: absent here.")

    if results.get("eval"):
        e = results["eval"][0]
        out += [
            "",
            "## Evaluation: `gpt2-adapt eval`",
            "",
            (
                f"{e['precision']}: {e['tokens_per_second']:,.0f} tokens/s over {e['tokens']:,} tokens "
                f"(the default run's adapter, disjoint windows of {s['block_size']})"
            ),
        ]
    if results.get("generation"):
        g = results["generation"]
        out += [
            "",
            "## Generation",
            "",
            (
                f"Greedy, {s['new_tokens']} new tokens, {_runs(s['repeats'])}: base {g['base']:,.1f}, unmerged "
                f"adapter {g['unmerged']:,.1f}, merged {g['merged']:,.1f} new tokens/s; switching to a loaded "
                f"adapter {1e3 * g['switch_seconds']:.2f} ms, loading one from the store "
                f"{1e3 * g['load_seconds']:.0f} ms"
            ),
        ]
    if results.get("serving"):
        out += [
            "",
            "## Serving: `gpt2-adapt serve`",
            "",
            "```",
            *serving_table(results["serving"]),
            "```",
            (
                "On a GPU the adapters' weights are in GPU memory: the resident memory per adapter is the server's "
                "CPU side only."
            ),
        ]
    elif not gpu:
        out += ["", "## Serving: `gpt2-adapt serve`", "", "A GPU row: absent here."]

    out += ["", "## One epoch of WikiText-103", ""]
    epoch = None
    if default:
        epoch = WIKITEXT_103_TOKENS / default["tokens_per_second"]
        out.append(
            f"Projected: {WIKITEXT_103_TOKENS:,} tokens at the default recipe's "
            f"{default['tokens_per_second']:,.0f} tokens/s: {_duration(epoch)}. Target on one H100-class GPU: "
            f"under {EPOCH_TARGET_SECONDS // 60} minutes, i.e. at least "
            f"{WIKITEXT_103_TOKENS // EPOCH_TARGET_SECONDS:,} tokens/s: " + _verdict(epoch, gpu, quick)
        )
    else:
        out.append("Not projected: the default recipe's training did not run.")

    if gpu and not quick:
        rows = targets(results)
        if epoch is not None:
            rows.append(
                (
                    "one epoch of WikiText-103",
                    _duration(epoch),
                    f"<= {EPOCH_TARGET_SECONDS // 60} min",
                    epoch <= EPOCH_TARGET_SECONDS,
                )
            )
        out += ["", "## Targets", "", "| target | figure | goal | |", "| --- | ---: | --- | --- |"]
        out += [f"| {what} | {figure} | {goal} | {'met' if met else 'MISSED'} |" for what, figure, goal, met in rows]
    if results["failed"]:
        out += ["", "## Failed", ""] + [f"- {line}" for line in results["failed"]]
    return "\n".join(out)


def _verdict(epoch_seconds: float, gpu: bool, quick: bool) -> str:
    if not gpu:
        return "a GPU target, not judged here."
    if quick:
        return "not judged in a quick run."
    return "met." if epoch_seconds <= EPOCH_TARGET_SECONDS else "MISSED."


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} minutes"
    return f"{seconds / 3600:,.1f} hours"


if __name__ == "__main__":
    sys.exit(main())
