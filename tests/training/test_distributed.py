"""The same recipe under `torchrun --nproc_per_node 2`: two CPU processes on the gloo backend."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes

# Each rank trains through the Python API and writes the metrics it ends with, to compare ranks.
PER_RANK = """
import json, os, sys
from toolkit.config.recipe import load_recipe
from toolkit.store.store import AdapterStore
from toolkit.training.train import train

result = train(load_recipe(sys.argv[1], sys.argv[2:]), AdapterStore("store"))
with open(f"metrics-rank{os.environ['RANK']}.json", "w") as f:
    json.dump(result.metrics.to_json(), f)
"""


def torchrun(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


@pytest.mark.parametrize("mode", ["none", "int8"])
def test_two_processes_train_one_adapter_with_the_same_metrics(write_recipe, tmp_path, mode):
    recipe = write_recipe(quantization={"mode": mode}, training={"max_steps": 20, "save_every": 10, "log_every": 5})
    script = tmp_path / "per_rank.py"
    script.write_text(PER_RANK)
    done = torchrun(str(script), str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]

    ranks = [json.loads(Path(f"metrics-rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:  # each rank times itself; everything else must agree
        for timing in ("seconds", "tokens_per_second"):
            rank["train"].pop(timing)
    assert ranks[0] == ranks[1]  # perplexity gathered across ranks: both see the whole evaluation set
    metrics = ranks[0]
    assert metrics["train"]["tokens"] == 20 * 8 * 32 * 2  # each rank trains on its own shard
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    adapters = [p.name for p in Path("store").iterdir() if not p.name.startswith(".")]
    assert adapters == ["tiny"]
    state = json.loads(Path("store/.checkpoints/tiny/checkpoint-20/trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) >= 3 and losses[-1] < losses[0]


def test_the_cli_runs_unchanged_under_torchrun_and_overwrites_an_earlier_run(write_recipe):
    """Run twice: the second --overwrite finds the first run's checkpoints, which one rank alone removes
    (both removing one tree at once can fail on either) while the other waits."""
    recipe = write_recipe(training={"max_steps": 6, "save_every": 2, "keep_checkpoints": 3})
    done = torchrun("-m", "toolkit.cli", "train", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("perplexity: base") == 1  # rank 0 reports for both
    assert json.loads(Path("store/tiny/metrics.json").read_text())["train"]["steps"] == 6
    first = json.loads(Path("store/.checkpoints/tiny/run.json").read_text())

    again = torchrun("-m", "toolkit.cli", "train", str(recipe), "--overwrite", "--set", "training.max_steps=4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(Path("store/tiny/metrics.json").read_text())["train"]["steps"] == 4
    checkpoints = sorted(p.name for p in Path("store/.checkpoints/tiny").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]  # the first run's 6 was removed with its folder
    assert json.loads(Path("store/.checkpoints/tiny/run.json").read_text())["recipe"] != first["recipe"]


NAN_ON_ONE_RANK = """
import os, sys, torch
import toolkit.training.train as train

compute = train.AdapterTrainer.compute_loss
def compute_loss(self, *args, **kwargs):
    loss = compute(self, *args, **kwargs)
    if os.environ["RANK"] == "1" and self.state.global_step + 1 == 3:
        return loss * float("nan")  # this rank's loss only, before the backward pass
    return loss
train.AdapterTrainer.compute_loss = compute_loss

from toolkit.cli import main
main(sys.argv[1:], standalone_mode=True)
"""


def test_a_non_finite_loss_on_one_rank_stops_every_rank_with_one_message(write_recipe, tmp_path):
    """Fault: rank 1's loss becomes NaN at step 3. Both ranks must stop there, promptly (not after the other
    waited out a collective's timeout), with the same message."""
    import time

    script = tmp_path / "nan_on_one_rank.py"
    script.write_text(NAN_ON_ONE_RANK)
    started = time.monotonic()
    done = torchrun(str(script), "train", str(write_recipe(training={"max_steps": 20, "save_every": 100})))
    assert time.monotonic() - started < 120
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and errors[0] == errors[1], done.stderr[-3000:]
    assert "training loss became nan on process 1 at step 3" in errors[0]
    assert not Path("store/tiny").exists()


def test_fsdp_settings_pass_through_to_the_trainer(write_recipe):
    recipe = write_recipe(training={"max_steps": 6, "fsdp": "full_shard auto_wrap"})
    done = torchrun("-m", "toolkit.cli", "train", str(recipe))
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
