"""`gpt2-adapt bench` on the tiny model: every case runs for real (in its own process) and reports figures
the table can judge; bad options are refused before anything runs."""

import json
import os

import pytest

from toolkit.bench.report import table
from toolkit.modeling.precision import training_precision
from toolkit.threads import threads_sleep

pytestmark = pytest.mark.slow  # real processes


def test_bench_measures_each_training_case_and_the_data_preparation(cli, tiny_model, corpus_dir):
    result = cli(
        "bench",
        "--model",
        tiny_model,
        "--text",
        corpus_dir / "train.txt",
        "--block-size",
        16,
        "--steps",
        2,
        "--repeats",
        1,
        "--only",
        "training",
        "--only",
        "data",
        "--json",
    )
    assert result.exit_code == 0, result.output
    results = json.loads(result.stdout)
    training = results["training"]
    plain = ["peft", "peft-bf16"] if training_precision("auto") == "bf16" else ["peft"]  # bf16 where it is native
    # the default and the plain script the targets compare against, each also with one core kept busy
    assert list(training) == ["toolkit", "toolkit-busy", "toolkit-nodropout", *plain, f"{plain[-1]}-busy", "seed"]
    assert training[f"{plain[-1]}-busy"]["precision"] == training[plain[-1]]["precision"]
    cores = len(os.sched_getaffinity(0))
    if threads_sleep():  # every core, busy or not
        assert training["toolkit-busy"]["threads"] == cores
    else:  # threads that spin leave the busy core
        assert training["toolkit-busy"]["threads"] <= max(1, cores - 1)
    assert [training[name]["precision"] for name in plain] == ["fp32", "bf16"][: len(plain)]
    parameters = training["toolkit"]["parameters"]
    for name, run in training.items():
        assert run["tokens_per_second"] > 0 and 0 < run["training_memory"] < run["peak_memory"], name
        assert run["parameters"] == parameters and run["steps"] == 3, name  # steps the timer saw: warm-up + 2
    assert training["toolkit"]["precision"] == training_precision("auto")
    assert 0.2 < training["seed"]["padding_share"] < 1  # the corpus' lines vary from one to three sentences
    data = results["data"]
    assert data["tokens"] > 10_000 and data["cached_seconds"] < data["first_seconds"]
    assert results["machine"]["gemm_peak_flops"]["bf16"] > 0

    report = table(results)
    for line in (
        "seed pipeline: padded lines",
        "plain peft + Trainer",
        "default vs seed pipeline",
        "default vs fastest plain peft + Trainer",
        "share of the bf16 GEMM peak",
        "Data preparation",
        "gpt2-adapt default recipe, one core busy",
        "default, one core busy vs quiet",
        "one core busy: another program",
    ):
        assert line in report


def test_bench_refuses_bad_options_before_measuring(cli, tmp_path):
    result = cli("bench", "--text", tmp_path / "missing.txt", "--steps", 0)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: --text: no such file {str(tmp_path / 'missing.txt')!r}; pass a text file, one document per line",
        "error: --steps: must be at least 1 (got 0)",
    ]
