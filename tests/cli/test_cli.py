"""The command line as a person meets it: help, version, verbosity, plan, and the metrics log."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolkit import __version__
from toolkit.cli import main


def all_commands(group=main, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if hasattr(command, "commands"):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize(
    "path, command", list(all_commands()), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_command_has_a_summary_and_an_example(path, command):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert command.get_short_help_str(limit=200).strip()  # a one-line summary
    assert "Example" in result.output, f"gpt2-adapt {' '.join(path)} --help shows no example"


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_quiet_prints_only_the_result_and_errors_are_plain_text_off_a_terminal(write_recipe, cli):
    result = cli("-q", "train", write_recipe(training={"max_steps": 3}))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "perplexity: base" in result.stdout
    bad = cli("train", "missing.toml")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: ")  # no colour codes off a terminal
    assert "\x1b[" not in bad.stderr


def test_metrics_log_holds_every_logged_step(write_recipe, cli):
    assert cli("train", write_recipe(training={"max_steps": 20, "log_every": 5, "eval_every": 10})).exit_code == 0
    entries = [json.loads(line) for line in Path("store/tiny/metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries if "loss" in e] == [5, 10, 15, 20]
    assert [e["step"] for e in entries if "eval_perplexity" in e] == [10, 20]
    final = json.loads(Path("store/tiny/metrics.json").read_text())["adapted"]["perplexity"]
    last_evaluation = [e for e in entries if "eval_perplexity" in e][-1]
    assert last_evaluation["eval_perplexity"] == pytest.approx(final, rel=1e-12)  # the adapter's own figure


def test_plan_counts_match_the_trained_adapter_and_write_nothing(write_recipe, cli):
    recipe = write_recipe()
    planned = cli("plan", recipe, "--json", "--measure-steps", "1")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert not Path("store").exists()
    assert plan["steps"] == 30 and plan["tokens_per_step"] == 8 * 32
    assert plan["seconds_per_step"] > 0 and plan["estimated_seconds"] == pytest.approx(30 * plan["seconds_per_step"])
    memory, weights = plan["memory_bytes"], plan["parameters"]["total"] * 4
    assert all(memory[p] > weights for p in ("fp32", "bf16", "int8"))  # weights, adapter state and a step
    ((measured_precision, measured),) = plan["measured_memory_bytes"].items()  # at the recipe's own precision
    assert measured_precision in ("fp32", "bf16") and measured > 0
    bigger = json.loads(
        cli("plan", write_recipe("big.toml", training={"batch_size": 16}), "--json", "--measure-steps", "0").stdout
    )
    assert all(bigger["memory_bytes"][p] > memory[p] for p in memory)  # activations grow with the batch

    assert cli("train", recipe).exit_code == 0
    from safetensors.torch import load_file

    weights = load_file("store/tiny/adapter_model.safetensors")
    assert plan["parameters"]["trainable"] == sum(w.numel() for w in weights.values())
    assert plan["adapter_bytes"] == sum(w.numel() * 4 for w in weights.values())
    assert (
        plan["tokens_per_epoch"]
        == json.loads(Path("store/tiny/metrics.json").read_text())["data"]["train"]["blocks"] * 32
    )


def test_train_dry_run_is_plan(write_recipe, cli):
    result = cli("train", write_recipe(), "--dry-run")
    assert result.exit_code == 0
    assert "trainable" in result.stdout and "memory with a int8 base" in result.stdout
    assert not Path("store").exists()


def test_progress_off_a_terminal_is_plain_lines(write_recipe, cli):
    result = cli("train", write_recipe(training={"max_steps": 20, "log_every": 10}))
    assert result.exit_code == 0
    assert "\r" not in result.stderr  # no redrawn bar in a log file or CI
    assert "step 10/20  loss" in result.stderr and "step 20/20  loss" in result.stderr
