"""The repository's benchmark scripts (benchmarks/, not installed): `python -m benchmarks.speed` on the tiny
model runs the other pipelines beside `gpt2-adapt bench`'s rows, each for real in its own process, and ends
its table with the targets; the scripts reach the toolkit as any program does, not through sys.path."""

import ast
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

from toolkit.modeling.precision import training_precision


@pytest.mark.slow  # real processes
def test_speed_script_runs_the_other_pipelines_beside_the_bench_and_judges_the_targets(
    tiny_model, corpus_dir, tmp_path
):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.speed", "--model", str(tiny_model), "--text", str(corpus_dir / "train.txt")]
        + ["--block-size", "16", "--steps", "2", "--repeats", "1", "--only", "training", "--json", str(out)],
        cwd=REPO,  # as BENCHMARKS.md runs it: from the repository's root
        env=os.environ | {"CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    training = json.loads(out.read_text())["training"]
    plain = ["peft", "peft-bf16"] if training_precision("auto") == "bf16" else ["peft"]  # bf16 where it is native
    # the bench's rows, then the plain script (the one the targets compare against also with one core busy), the seed
    assert list(training) == ["toolkit", "toolkit-busy", "toolkit-nodropout", *plain, f"{plain[-1]}-busy", "seed"]
    assert [training[name]["precision"] for name in plain] == ["fp32", "bf16"][: len(plain)]
    assert training[f"{plain[-1]}-busy"]["precision"] == training[plain[-1]]["precision"]
    parameters = training["toolkit"]["parameters"]
    for name, run in training.items():
        assert run["tokens_per_second"] > 0 and 0 < run["training_memory"] < run["peak_memory"], name
        assert run["parameters"] == parameters and run["steps"] == 3, name  # steps the timer saw: warm-up + 2
    assert 0.2 < training["seed"]["padding_share"] < 1  # the corpus' lines vary from one to three sentences

    report = done.stdout
    # a full fine-tune's row has no share of the peak (LoRA's FLOPs count does not apply)
    assert re.search(
        r"^seed pipeline: padded lines, full fine-tune, fp32 +fp32 +[\d,.]+ +[\d.]+ GiB", report, re.MULTILINE
    )
    assert re.search(r"^plain peft \+ Trainer: run_clm packing, fp32 +fp32 +[\d,.]+ +\d+% ", report, re.MULTILINE)
    padding = re.search(r"\(seed pipeline: (\d+)% of its positions are padding\)", report)
    assert padding and int(padding[1]) == round(100 * training["seed"]["padding_share"])
    targets = report[report.index("\nTargets\n") :]  # the table ends with them
    for what in (
        "default vs seed pipeline, useful tokens/s",
        "default vs fastest plain peft + Trainer",
        "default, share of the bf16 GEMM peak",
        "default, one core busy vs quiet, tokens/s",
        f"default vs plain peft + Trainer ({training[plain[-1]]['precision']}), one core busy",
    ):
        assert re.search(rf"^  {re.escape(what)}.* target .* (met|MISSED)$", targets, re.MULTILINE), what


# Loads an older commit's toolkit beside this one, from a `git archive` copy: the one use of sys.path here.
OLD_VERSION_LOADER = "eval_windows.py"


def test_benchmark_scripts_import_the_project_as_any_program_does():
    touched = [
        path.name
        for path in sorted((REPO / "benchmarks").glob("*.py"))
        if path.name != OLD_VERSION_LOADER
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys"
    ]
    assert touched == []
    assert not (REPO / "toolkit" / "bench" / "comparisons.py").exists()
