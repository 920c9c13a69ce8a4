"""Keeping the best adapter and stopping early, through `gpt2-adapt train` on the tiny GPT-2 (that they
survive kill -9 and --resume: tests/training/test_faults.py)."""

import json
import shutil
from pathlib import Path

import pytest


def evaluations(store: str = "store") -> dict[int, float]:
    """Step -> evaluation perplexity, from the run's log."""
    lines = Path(store, "tiny", "metrics.jsonl").read_text().splitlines()
    return {entry["step"]: entry["eval_perplexity"] for entry in map(json.loads, lines) if "eval_perplexity" in entry}


def test_keep_best_saves_the_adapter_of_the_lowest_evaluation(write_recipe, cli, tmp_path):
    # Evaluated on digits while it learns sentences: the more it trains, the less likely digits become.
    digits = tmp_path / "digits.txt"
    digits.write_text("".join(f"{n * 7919 % 10**12:012d} {n * 104729 % 10**9:09d}\n" for n in range(1, 40)))
    recipe = write_recipe(
        data={"eval_files": [str(digits)]},
        training={"max_steps": 24, "eval_every": 4, "precision": "fp32", "keep": "best"},
    )
    result = cli("train", recipe)
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    scores = evaluations()
    best = min(scores, key=scores.get)
    assert sorted(scores) == [4, 8, 12, 16, 20, 24]
    assert best < 24, scores  # the case worth testing: the best is not the last
    assert metrics["kept"] == {"keep": "best", "step": best, "stopped_early": False}
    assert metrics["adapted"]["perplexity"] == scores[best] == pytest.approx(min(scores.values()))
    assert f"kept the adapter of step {best}" in result.output
    shown = cli("adapters", "show", "tiny").stdout  # beside the kept step's perplexity, which step it is
    assert f"  kept: the adapter of step {best}, the best evaluation\n" in shown and "trained: 24 steps," in shown
    # The saved weights are that step's: eval measures them again.
    again = cli("eval", "--recipe", recipe, "--adapter", "tiny", "--json")
    assert json.loads(again.stdout)[1]["perplexity"] == pytest.approx(scores[best], rel=1e-6)


def test_early_stopping_stops_after_patience_evaluations_without_improvement(write_recipe, cli):
    recipe = write_recipe(
        training={"max_steps": 60, "eval_every": 5, "early_stopping_patience": 3, "early_stopping_threshold": 1e9}
    )
    result = cli("train", recipe)
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["train"]["steps"] == 20  # 5 sets the reference; 10, 15, 20 do not beat it by 1e9
    assert metrics["kept"] == {"keep": "last", "step": 20, "stopped_early": True}
    assert "stopped early" in result.output
    assert sorted(evaluations()) == [5, 10, 15, 20]
    shown = cli("adapters", "show", "tiny").stdout
    assert "trained: 20 steps (stopped early: no improvement)," in shown
    assert "  kept: the adapter of step 20, the last step\n" in shown


def test_resuming_with_keep_best_after_a_run_that_kept_the_last_tracks_the_best_from_the_resume_point(
    write_recipe, cli
):
    """A run with keep = "last" died after checkpoint 10; resumed with keep = "best" (--allow-changed), it
    keeps the best of the evaluations after the resume point, and nothing is called damaged."""
    common = {"max_steps": 20, "eval_every": 5, "save_every": 10, "precision": "fp32"}
    assert cli("train", write_recipe(training=common)).exit_code == 0
    shutil.rmtree("store/tiny")
    shutil.rmtree("store/.checkpoints/tiny/checkpoint-20")
    result = cli("train", write_recipe(training={**common, "keep": "best"}), "--resume", "--allow-changed")
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    after = {step: ppl for step, ppl in evaluations().items() if step > 10}
    best = min(after, key=after.get)
    assert metrics["kept"] == {"keep": "best", "step": best, "stopped_early": False}
    assert metrics["adapted"]["perplexity"] == after[best]
