"""Training survives being killed: real processes, real signals, and a real full disk.

A run is killed at a chosen moment by a small harness that wraps the real CLI in a child process and
sends SIGKILL to itself at that moment (mid-step, mid-checkpoint, mid-final-save). Resuming must then
give an adapter bit-identical to an uninterrupted run with the same seed.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toolkit.training.checkpoints import PROGRESS

pytestmark = pytest.mark.slow  # real processes

HARNESS = r"""
import os, signal, sys
moment, at = sys.argv[1], int(sys.argv[2])
import toolkit.training.train as train

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "step":  # after the forward and backward of step `at`, before its optimizer step
    step = train.AdapterTrainer.training_step
    def training_step(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        if self.state.global_step + 1 == at:
            die()
        return loss
    train.AdapterTrainer.training_step = training_step
elif moment in ("checkpoint", "fill"):  # checkpoint `at`: its weights written, its optimizer state not yet
    save = train.AdapterTrainer._save_optimizer_and_scheduler
    def save_optimizer(self, output_dir):
        if self.state.global_step == at:
            if moment == "checkpoint":
                die()
            with open(os.environ["FILLER"], "wb") as f:  # fill the disk: the next write fails with ENOSPC
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                        f.flush()
                except OSError:
                    pass
        return save(self, output_dir)
    train.AdapterTrainer._save_optimizer_and_scheduler = save_optimizer
elif moment == "final-save":  # inside the adapter's atomic save, after its weights are written
    def write_manifest(*args, **kwargs):
        die()
    train.write_manifest = write_manifest

from toolkit.cli import main

main(sys.argv[3:], standalone_mode=True)
"""


def run_harness(moment: str, at: int, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HARNESS, moment, str(at), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def adapter_tensors(store: str) -> dict[str, torch.Tensor]:
    return load_file(Path(store) / "tiny" / "adapter_model.safetensors")


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed adapter differs from the uninterrupted one"


@pytest.fixture
def recipe(write_recipe):
    # Dropout on, so that resuming must also restore the RNG state exactly.
    return write_recipe(lora={"dropout": 0.1}, training={"max_steps": 30, "save_every": 10, "keep_checkpoints": 1})


@pytest.fixture
def uninterrupted(recipe, cli):
    assert cli("train", recipe, "--store", "whole").exit_code == 0
    return adapter_tensors("whole")


@pytest.mark.parametrize("moment, at", [("step", 15), ("checkpoint", 20), ("final-save", 0)])
def test_kill_9_then_resume_gives_the_uninterrupted_adapter(recipe, uninterrupted, cli, moment, at):
    killed = run_harness(moment, at, "train", recipe)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not Path("store/tiny").exists()  # no adapter, let alone a half-written one
    if moment == "checkpoint":
        half = Path("store/.checkpoints/tiny/checkpoint-20")
        assert half.is_dir() and not (half / PROGRESS).exists()
        # keep_checkpoints = 1, yet the only complete checkpoint survived the newer, broken one.
        assert (Path("store/.checkpoints/tiny/checkpoint-10") / PROGRESS).is_file()

    resumed = cli("train", recipe, "--resume")
    assert resumed.exit_code == 0, resumed.output
    if moment == "checkpoint":
        assert "skipping incomplete checkpoint" in resumed.output
    assert_identical(uninterrupted, adapter_tensors("store"))
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["train"]["steps"] == 30 and metrics["train"]["tokens"] == 30 * 8 * 32


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(recipe, uninterrupted, cli, write_recipe):
    long_recipe = write_recipe(
        "long.toml", lora={"dropout": 0.1}, training={"max_steps": 3000, "save_every": 10, "keep_checkpoints": 1}
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "train", str(long_recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = Path("store/.checkpoints/tiny/checkpoint-10") / PROGRESS
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    saved = sorted(Path("store/.checkpoints/tiny").glob("checkpoint-*"))
    assert saved and all((c / PROGRESS).is_file() for c in saved)
    assert not Path("store/tiny").exists()
    step = int(saved[-1].name.split("-")[1])
    assert 10 <= step < 3000


def test_second_ctrl_c_stops_at_once(write_recipe):
    recipe = write_recipe(training={"max_steps": 100000, "save_every": 100000})
    child = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "train", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not Path("store/.checkpoints/tiny/run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    time.sleep(0.2)
    child.send_signal(signal.SIGINT)
    started = time.monotonic()
    child.communicate(timeout=60)
    assert child.returncode != 0 and time.monotonic() - started < 30
    assert not Path("store/tiny").exists()


def test_resume_refuses_a_changed_recipe_or_data_unless_forced(recipe, cli, write_recipe, corpus_dir, tmp_path):
    killed = run_harness("step", 15, "train", recipe)
    assert killed.returncode == -signal.SIGKILL

    changed = write_recipe(
        "changed.toml",
        lora={"dropout": 0.1},
        training={"max_steps": 30, "save_every": 10, "keep_checkpoints": 1, "learning_rate": 5e-3},
    )
    refused = cli("train", changed, "--resume")
    assert refused.exit_code == 2
    assert "recipe changed" in refused.output and "--allow-changed" in refused.output

    data = tmp_path / "other.txt"
    data.write_text((corpus_dir / "train.txt").read_text()[:-200] + "\n")
    other_data = write_recipe(
        "data.toml",
        data={"train_files": [str(data)]},
        lora={"dropout": 0.1},
        training={"max_steps": 30, "save_every": 10, "keep_checkpoints": 1},
    )
    assert "training data changed" in cli("train", other_data, "--resume").output

    forced = cli("train", changed, "--resume", "--allow-changed")
    assert forced.exit_code == 0, forced.output
    assert json.loads(Path("store/tiny/metrics.json").read_text())["train"]["steps"] == 30


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 60, "save_every": 2, "learning_rate": 1e6, "max_grad_norm": 0.0})
    result = cli("train", recipe)
    assert result.exit_code == 2, result.output
    assert "training loss became" in result.output and "at step" in result.output
    assert not Path("store/tiny").exists()
    latest = sorted(Path("store/.checkpoints/tiny").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if latest:  # whatever was checkpointed holds finite weights
        weights = load_file(latest[-1] / "adapter_model.safetensors")
        assert all(torch.isfinite(w).all() for w in weights.values())


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of limited size (tmpfs); skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def make(size: str) -> Path:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        return mount

    yield make
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_too_little_free_space_is_refused_before_training(write_recipe, cli, small_disk):
    disk = small_disk("2m")
    result = cli("train", write_recipe(), "--store", disk / "store")
    assert result.exit_code == 2
    assert "not enough free disk space" in result.output
    assert not (disk / "store").exists()


def test_full_disk_mid_run_leaves_nothing_corrupt_and_resumes(recipe, uninterrupted, cli, small_disk):
    disk = small_disk("24m")
    store = disk / "store"
    filler = disk / "filler"
    full = run_harness("fill", 20, "train", recipe, "--store", store, env={"FILLER": str(filler)})
    assert full.returncode == 2, full.stderr
    assert "disk filled up" in full.stderr and "--resume" in full.stderr
    assert "Traceback" not in full.stderr
    assert not (store / "tiny").exists()
    assert (store / ".checkpoints/tiny/checkpoint-10" / PROGRESS).is_file()

    filler.unlink()
    resumed = cli("train", recipe, "--store", store, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_identical(uninterrupted, load_file(store / "tiny" / "adapter_model.safetensors"))


# ---------------------------------------------------------------- the reliability round (issue 12)


def test_resume_after_an_interrupted_overwrite_trains_the_new_run(write_recipe, cli):
    """Fault: a retrain (--overwrite, another learning rate) killed with SIGKILL after its checkpoint 20,
    over a finished adapter of 40 steps. --resume must continue the new run, not report the old adapter."""
    old = write_recipe(training={"max_steps": 40, "save_every": 10, "learning_rate": 3e-3})
    assert cli("train", old).exit_code == 0
    before = adapter_tensors("store")
    new = write_recipe("new.toml", training={"max_steps": 40, "save_every": 10, "learning_rate": 1e-2})
    killed = run_harness("step", 25, "train", new, "--overwrite")  # dies in step 25: checkpoint 20 is complete
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (Path("store/.checkpoints/tiny/checkpoint-20") / PROGRESS).is_file()

    resumed = cli("train", new, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "nothing to do" not in resumed.output
    recipe = Path("store/tiny/recipe.toml").read_text()
    assert "learning_rate = 0.01" in recipe and "0.003" not in recipe
    assert not all(torch.equal(before[k], v) for k, v in adapter_tensors("store").items())
    assert cli("train", new, "--store", "whole").exit_code == 0  # the new recipe, never interrupted
    assert_identical(adapter_tensors("whole"), adapter_tensors("store"))
    again = cli("train", new, "--resume")  # finished: nothing more to do
    assert again.exit_code == 0 and "had finished" in again.output


def test_sigterm_saves_a_checkpoint_says_how_to_resume_and_exits_143(write_recipe):
    """Fault: SIGTERM (what a scheduler or `kill` sends) in the middle of a run: treated like Ctrl-C."""
    recipe = write_recipe(training={"max_steps": 3000, "save_every": 10, "keep_checkpoints": 1})
    child = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "train", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = Path("store/.checkpoints/tiny/checkpoint-10") / PROGRESS
    deadline = time.monotonic() + 120
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert "terminated (SIGTERM)" in err and "--resume" in err and "Traceback" not in err
    saved = sorted(Path("store/.checkpoints/tiny").glob("checkpoint-*"))
    assert saved and all((c / PROGRESS).is_file() for c in saved)


FINGERPRINT = """
import sys
from toolkit.modeling.fingerprints import weights_fingerprint
from toolkit.records import ModelSource
print(weights_fingerprint(ModelSource(sys.argv[1])))
"""


def test_concurrent_processes_keep_every_fingerprint_in_the_cache(tiny_model, tmp_path):
    """Fault: six processes hash six bases into one cache file at the same time; each entry must survive
    (a read-modify-write without a lock loses some) and no temporary file may be left behind."""
    folders = []
    for i in range(6):
        folder = tmp_path / f"base-{i}"
        shutil.copytree(tiny_model, folder)
        folders.append(folder)
    children = [
        subprocess.Popen([sys.executable, "-c", FINGERPRINT, str(f)], stdout=subprocess.PIPE, text=True)
        for f in folders
    ]
    printed = [child.communicate(timeout=120)[0].strip() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert len(set(printed)) == 1  # the same weights, copied: one fingerprint
    cache = Path(os.environ["GPT2_ADAPT_CACHE"])
    known = json.loads((cache / "fingerprints.json").read_text())
    assert sum(str(f.resolve()) in key for key in known for f in folders) == 6
    assert [p.name for p in cache.iterdir() if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- early stopping and the best adapter (issue 16)


def test_the_best_adapter_and_the_patience_survive_kill_9(write_recipe, cli, tmp_path):
    """keep = "best" with patience 2 and a threshold no evaluation can meet: the first evaluation (step 5) is
    the reference, 10 and 15 miss, so the run stops at 15. Evaluated on digits while it learns sentences,
    the best is the first evaluation's adapter, which only the checkpoints carry past a kill. Killed after
    checkpoint 10 (one miss, the best of step 5), or while saving the adapter, the resumed run must stop at
    the same step with the same best, bit for bit."""
    digits = tmp_path / "digits.txt"
    digits.write_text("".join(f"{n * 7919 % 10**12:012d} {n * 104729 % 10**9:09d}\n" for n in range(1, 40)))
    recipe = write_recipe(
        data={"eval_files": [str(digits)]},
        lora={"dropout": 0.1},
        training={
            "max_steps": 40,
            "eval_every": 5,
            "save_every": 10,
            "keep_checkpoints": 1,
            "keep": "best",
            "early_stopping_patience": 2,
            "early_stopping_threshold": 1e9,
        },
    )
    assert cli("train", recipe, "--store", "whole").exit_code == 0
    whole = json.loads(Path("whole/tiny/metrics.json").read_text())
    assert whole["train"]["steps"] == 15 and whole["kept"] == {"keep": "best", "step": 5, "stopped_early": True}

    for moment, at, store in (("step", 12, "killed-mid-run"), ("final-save", 0, "killed-saving")):
        killed = run_harness(moment, at, "train", recipe, "--store", store)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if moment == "step":
            state = json.loads(Path(store, ".checkpoints/tiny/checkpoint-10/gpt2_adapt_best.json").read_text())
            assert state["misses"] == 1 and state["step"] == 5
        resumed = cli("train", recipe, "--store", store, "--resume")
        assert resumed.exit_code == 0, resumed.output
        metrics = json.loads(Path(store, "tiny/metrics.json").read_text())
        assert metrics["train"]["steps"] == 15 and metrics["kept"] == whole["kept"]
        assert metrics["adapted"] == whole["adapted"]
        assert_identical(adapter_tensors("whole"), adapter_tensors(store))
