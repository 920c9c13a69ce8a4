"""The thread policy: what it reads (cores, /proc/stat's counters, our own CPU time) and the threads it picks."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from toolkit import threads
from toolkit.threads import Load, LoadMeter, Sample, ThreadGovernor, busy_seconds, choose, load_between

STAT = """cpu  900 50 300 5000 10 0 5 0 0 0
cpu0 {user0} {nice0} 100 2500 5 0 2 0 0 0
cpu1 {user1} 0 100 2500 5 0 3 0 0 0
intr 12345
"""


def stat(user0=400, nice0=50, user1=300) -> str:
    return STAT.format(user0=user0, nice0=nice0, user1=user1)


@pytest.mark.parametrize(
    ("cores", "busy", "threads_picked", "reason"),
    [
        (2, 0.0, 2, "2 cores, none busy, threads spin at barriers"),
        (2, 0.4, 2, "2 cores, none busy, threads spin at barriers"),  # under half a core: noise, a short burst
        (2, 0.6, 1, "2 cores, 1 busy, threads spin at barriers"),
        (2, 1.0, 1, "2 cores, 1 busy, threads spin at barriers"),
        (2, 3.5, 1, "2 cores, 2 busy, threads spin at barriers"),  # every core taken: still one thread, never none
        (8, 2.7, 5, "8 cores, 3 busy, threads spin at barriers"),
        (1, 0.0, 1, "1 core, none busy, threads spin at barriers"),
    ],
)
def test_spinning_threads_take_one_per_core_that_other_programs_leave_free(cores, busy, threads_picked, reason):
    choice = choose("training", Load(cores, busy), sleeping=False)
    assert (choice.threads, choice.reason, choice.from_load) == (threads_picked, reason, True)


@pytest.mark.parametrize(("cores", "busy"), [(2, 0.0), (2, 1.0), (2, 3.5), (8, 2.7)])
def test_sleeping_threads_take_every_core_busy_or_not(cores, busy):
    choice = choose("training", Load(cores, busy))
    assert (choice.threads, choice.from_load) == (cores, True)
    assert choice.reason.endswith("busy, threads sleep at barriers")


def test_the_log_line_says_what_was_chosen_and_why():
    assert (
        str(choose("training", Load(2, 1.0), sleeping=False))
        == "2 cores, 1 busy, threads spin at barriers: training on 1 thread"
    )
    assert str(choose("serving", Load(2, 1.0))) == "2 cores, 1 busy, threads sleep at barriers: serving on 2 threads"


def test_a_requested_count_and_omp_num_threads_override_the_load():
    asked = choose("evaluation", Load(2, 2.0), requested=2, sleeping=False)
    assert (asked.threads, asked.from_load, str(asked)) == (2, False, "2 cores, 2 asked for: evaluation on 2 threads")
    omp = choose("training", Load(2, 0.0), omp_num_threads="1")
    assert (omp.threads, omp.from_load, omp.reason) == (1, False, "2 cores, OMP_NUM_THREADS=1")
    assert choose("training", Load(2, 0.0), requested=3, omp_num_threads="1").threads == 3  # the recipe wins
    assert choose("training", Load(2, 1.0), omp_num_threads="", sleeping=False).threads == 1  # unset: the load


def test_the_wait_policy_in_effect_is_read_from_the_environment(monkeypatch):
    for value, sleeping in (("PASSIVE", True), ("passive", True), ("ACTIVE", False)):
        monkeypatch.setenv("OMP_WAIT_POLICY", value)
        assert threads.threads_sleep() is sleeping
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert threads.threads_sleep() is False  # OpenMP's default spins first


def test_busy_time_counts_the_allowed_cpus_user_system_and_interrupts_not_niced_work():
    ticks = 100
    # cpu0: user 400 + system 100 + softirq 2; cpu1: 300 + 100 + 3; the nice column and "cpu" total ignored
    assert busy_seconds(stat(), [0, 1], ticks) == pytest.approx((502 + 403) / ticks)
    assert busy_seconds(stat(), [1], ticks) == pytest.approx(403 / ticks)
    assert busy_seconds(stat(nice0=5000), [0, 1], ticks) == busy_seconds(stat(), [0, 1], ticks)


def test_other_programs_load_is_the_machines_busy_time_less_our_own():
    before = Sample(wall=10.0, machine=100.0, own=5.0)
    # 4 s: the cores were busy 6 s, 2 of them ours -> other programs kept 1 core busy
    assert load_between(before, Sample(14.0, 106.0, 7.0), cores=2) == Load(2, 1.0)
    assert load_between(before, Sample(14.0, 102.0, 7.0), cores=2) == Load(2, 0.0)  # all of it ours
    assert load_between(before, Sample(14.0, None, 7.0), cores=2) == Load(2, 0.0)  # no /proc/stat: no load known


def test_the_meter_reads_proc_stat(tmp_path):
    path = tmp_path / "stat"
    path.write_text(stat())
    meter = LoadMeter(stat=path)
    assert meter.cpus == sorted(os.sched_getaffinity(0))
    assert meter.last.machine == busy_seconds(stat(), meter.cpus, os.sysconf("SC_CLK_TCK"))
    path.write_text("not the kernel's format")
    assert meter.sample().machine is None


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_set_threads_gives_torch_the_requested_threads_and_logs_why(torch_threads, caplog):
    with caplog.at_level(logging.INFO, logger="toolkit.threads"):
        choice = threads.set_threads("evaluation", requested=1)
    assert torch.get_num_threads() == 1
    assert f"{choice}" in caplog.text and "evaluation on 1 thread" in caplog.text


def test_the_governor_follows_a_load_that_comes_and_goes(tmp_path, torch_threads, caplog):
    """With spinning threads, a long run measured again over a window: one core's worth of other work
    appears (a thread fewer), then leaves (every core again)."""
    path = tmp_path / "stat"
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs")
    ticks = os.sysconf("SC_CLK_TCK")
    user = 1000
    path.write_text(
        STAT.format(user0=user, nice0=0, user1=user) + "".join(f"cpu{n} 0 0 0 0 0 0 0 0 0 0\n" for n in cpus[2:])
    )
    meter = LoadMeter(stat=path)
    governor = ThreadGovernor(
        "training", choose("training", Load(len(cpus), 0.0), sleeping=False), meter, sleeping=False
    )
    assert governor.update() is None  # under FOLLOW_SECONDS since the meter was made: not measured yet

    def after(seconds_ago: float, busy_cores: float) -> None:
        """Pretend the last measurement was `seconds_ago`, and that other work kept `busy_cores` busy since."""
        nonlocal user
        meter.last = Sample(meter.last.wall - seconds_ago, meter.last.machine, meter.last.own)
        user += round(busy_cores * seconds_ago * ticks)
        path.write_text(
            STAT.format(user0=user, nice0=0, user1=1000) + "".join(f"cpu{n} 0 0 0 0 0 0 0 0 0 0\n" for n in cpus[2:])
        )

    with caplog.at_level(logging.INFO, logger="toolkit.threads"):
        after(3.0, busy_cores=1.0)
        assert governor.update().threads == len(cpus) - 1
        assert torch.get_num_threads() == len(cpus) - 1
        after(3.0, busy_cores=0.0)
        assert governor.update().threads == len(cpus)
        assert torch.get_num_threads() == len(cpus)
        after(3.0, busy_cores=0.0)
        assert governor.update() is None  # unchanged: nothing applied, nothing logged
    assert caplog.text.count("the load changed") == 2


CHECK_WAIT_POLICY = """
import os, sys
from toolkit.cli import main
main(["adapters", "--help"], standalone_mode=False)
print("OMP_WAIT_POLICY=" + os.environ.get("OMP_WAIT_POLICY", "unset"), "torch" in sys.modules)
"""


@pytest.mark.parametrize(("preset", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_line_makes_openmp_threads_sleep_before_torch_loads_unless_the_user_chose(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | (
        {"OMP_WAIT_POLICY": preset} if preset else {}
    )
    out = subprocess.run(
        [sys.executable, "-c", CHECK_WAIT_POLICY], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == f"OMP_WAIT_POLICY={expected} False"


def test_the_thread_settings_refuse_a_negative_count_and_leave_the_run_identity_alone(write_recipe):
    from toolkit.config.recipe import load_recipe
    from toolkit.errors import ToolkitError
    from toolkit.evaluation.evaluate import EvalOptions
    from toolkit.serving.settings import ServerSettings

    recipe = write_recipe()
    # the thread count changes the speed, not what is trained: a run resumes under another one
    assert load_recipe(recipe, ["training.threads=1"]).fingerprint() == load_recipe(recipe).fingerprint()
    assert load_recipe(recipe, ["training.threads=1"]).training.threads == 1
    with pytest.raises(ToolkitError, match="training.threads: must be >= 0"):
        load_recipe(recipe, ["training.threads=-1"])
    for make in (lambda: EvalOptions(threads=-1), lambda: ServerSettings(threads=-1)):
        with pytest.raises(ToolkitError, match="threads.*must be >= 0"):
            make()


def test_the_command_line_options_reach_the_settings(cli, write_recipe):
    result = cli("train", write_recipe(), "--threads", "-2")  # refused by the recipe's check, before any work
    assert result.exit_code == 2 and "training.threads: must be >= 0" in result.output
    result = cli("eval", "--model", "unused", "--files", "unused.txt", "--threads", "-1")
    assert result.exit_code == 2 and "--threads: must be >= 0" in result.output
