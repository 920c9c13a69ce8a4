"""benchmarks/gpu.sh on the CPU, as someone runs it: a real run (the script's own process, each measurement in
another) on the tiny model writes the report with the CPU's rows, projects the WikiText-103 epoch, and says that
the GPU rows are absent; bad input is refused with one line each, before anything runs."""

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # real processes

SCRIPT = REPO / "benchmarks" / "gpu.sh"


def run_script(*args):
    # The CPU path even where a GPU is present; the script runs with this interpreter (its packages).
    env = os.environ | {"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True, timeout=600)


def figure(text: str) -> float:
    return float(text.replace(",", ""))


def test_gpu_script_runs_short_on_the_cpu_without_the_gpu_rows(tiny_model, corpus_dir, tmp_path):
    done = run_script(
        "--model",
        tiny_model,
        "--text",
        corpus_dir / "train.txt",
        "--out",
        "report.md",
        "--block-size",
        16,
        "--batch-size",
        2,
        "--steps",
        2,
    )
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "report.md").read_text()  # the test's working folder: --out is the caller's path
    assert done.stdout.strip() == report.strip()
    # Rewritten after each measurement while it runs; the last one is the finished report.
    assert "unfinished" not in report and not (tmp_path / "report.md.partial").exists()

    assert "**no CUDA device: the GPU rows are absent; run benchmarks/gpu.sh on a GPU machine**" in report
    assert "batch 2 x 16 tokens; training timed over 2 steps" in report
    rows = re.findall(
        r"^\| (default recipe|training\.base_dropout = false) \| (\w+) \| ([\d,]+) \| ([\d.e-]+)% \| "
        r"([\d.]+) GiB \|  \|$",
        report,
        re.MULTILINE,
    )
    assert [row[0] for row in rows] == ["default recipe", "training.base_dropout = false"]
    for _, _, tokens_per_second, mfu, peak in rows:
        assert figure(tokens_per_second) > 0 and figure(mfu) > 0 and figure(peak) > 0

    evaluation = re.search(r"^bf16: ([\d,]+) tokens/s over ([\d,]+) tokens", report, re.MULTILINE)
    assert evaluation and figure(evaluation[1]) > 0 and figure(evaluation[2]) > 0
    generation = re.search(r"base ([\d,.]+), unmerged adapter ([\d,.]+), merged ([\d,.]+) new tokens/s", report)
    assert generation and all(figure(g) > 0 for g in generation.groups())

    epoch = re.search(
        r"Projected: 120,000,000 tokens at the default recipe's ([\d,]+) tokens/s: ([\d,.]+) "
        r"(seconds|minutes|hours)\. .*: a GPU target, not judged here\.",
        report,
    )
    assert epoch and figure(epoch[1]) == figure(rows[0][2])

    # The GPU rows: quantized bases, serving, the targets (judged only on a full GPU run).
    for absent in ("| int8 base", "| nf4 base", "clients", "## Targets", "MISSED", "## Failed"):
        assert absent not in report, absent
    assert not re.search(r"\bmet\b", report)
    assert "The int8 and nf4 rows (quantized bases) are GPU rows: absent here." in report


def test_gpu_script_refuses_bad_input_before_measuring(tmp_path):
    done = run_script("--model", tmp_path / "missing", "--text", tmp_path / "missing.txt", "--steps", 0)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        (
            f"error: --model: no model folder {str(tmp_path / 'missing')!r} (a folder with a GPT-2 config.json and "
            "tokenizer); pass one"
        ),
        f"error: --text: no such file {str(tmp_path / 'missing.txt')!r}; pass a text file, one document per line",
        "error: --steps: must be at least 1 (got 0)",
    ]
    assert not (tmp_path / "gpu-report.md").exists()
