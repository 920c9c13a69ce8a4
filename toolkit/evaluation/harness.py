"""lm-evaluation-harness tasks (wikitext, lambada_openai, hellaswag, or tasks of one's own in a folder) on a
model the toolkit has loaded: the base, an adapter applied in memory, a mix, a merged folder.

The harness runs its own Hugging Face wrapper (`HFLM`) around the loaded model object, so an adapter is
never merged or copied: whichever adapter is active in the peft model is what the harness scores. Every
task is found and its data loaded before any model is: a task whose data is neither cached nor
downloadable fails in seconds (the harness's library would otherwise retry the Hub for a minute).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolkitError, first_line, param
from ..records import TaskScore
from ..sources.hub import hub_reachable

INSTALL = "pip install 'gpt2-adapt[harness]'"
DEFAULT_BATCH = 8  # requests per forward pass when the caller gives no batch size


@dataclass(frozen=True)
class Tasks:
    """Harness tasks, found and with their data at hand: what `run_tasks` runs."""

    names: tuple[str, ...]
    manager: object  # lm_eval.tasks.TaskManager that knows them


@dataclass(frozen=True)
class TaskRun:
    """One entry of the harness's results (a task, or a group's aggregate)."""

    name: str
    score: TaskScore
    documents: int  # documents the harness scored (after `limit`)
    seconds: float  # of the harness run that produced it


def prepare_tasks(names: Sequence[str], include_paths: Sequence[str] = ()) -> Tasks:
    """Find the tasks (in `include_paths`, then among the harness's own) and load their data, or say in one
    line per task what is missing and how to fix it."""
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ToolkitError(f"{param('tasks')}: harness tasks need lm-evaluation-harness; {INSTALL}") from None
    paths = [str(Path(p).expanduser()) for p in include_paths]
    missing = [p for p in paths if not Path(p).is_dir()]
    if missing:
        raise ToolkitError(
            *(f"{param('include_paths')}: {p} is not a folder; name a folder of task YAML files" for p in missing)
        )
    with _quiet_harness():
        manager = TaskManager(include_path=paths, include_defaults=False) if paths else None
        if manager is None or not set(names) <= set(manager.all_tasks):
            manager = TaskManager(include_path=paths or None)  # the harness's own: indexing them takes seconds
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        raise ToolkitError(
            *(
                f"{param('tasks')}: no task named {n!r}{_close(n, manager.all_tasks)}; "
                f"`lm-eval ls tasks` lists the harness's, {param('include_paths')} adds a folder of your own"
                for n in unknown
            )
        )
    if not hub_reachable():
        import datasets

        datasets.config.HF_HUB_OFFLINE = True  # the cached copy, without the libraries' retries
    problems = []
    for name in names:
        try:
            with _quiet_harness():
                manager.load([name])  # builds the task, which loads its data
        except ConnectionError:
            problems.append(
                f"{param('tasks')}: the data of task {name!r} is not in the local Hugging Face cache and the Hub "
                f"cannot be reached; run it once where the Hub is reachable (the cache keeps it), or define the task "
                f"over local files in a folder and pass it as {param('include_paths')}"
            )
        except Exception as err:  # noqa: BLE001 - the harness raises anything from a task's YAML or data: say which task
            problems.append(f"{param('tasks')}: task {name!r} cannot be loaded: {first_line(err)}")
    if problems:
        raise ToolkitError(*problems)
    return Tasks(tuple(names), manager)


def run_tasks(
    model,
    tokenizer,
    tasks: Tasks,
    *,
    limit: int | None = None,
    batch_size: int = 0,
    max_length: int | None = None,
    progress: bool = False,
) -> list[TaskRun]:
    """Run each task on the model as it is (its active adapter), through the harness's `HFLM` given the
    model object. `limit`: the first N documents of each task; `max_length`: the harness's window
    (default: the model's context)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    with _quiet_harness(progress):
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size or DEFAULT_BATCH, max_length=max_length)
        out = []
        for name in tasks.names:
            started = time.perf_counter()
            results = simple_evaluate(
                model=lm, tasks=[name], task_manager=tasks.manager, limit=limit, log_samples=False
            )
            seconds = time.perf_counter() - started
            out += [
                TaskRun(task, _task_score(results, task), _documents(results, task), seconds)
                for task in results["results"]
            ]
    return out


def _task_score(results: dict, task: str) -> TaskScore:
    """The harness's figures of one task: "metric,filter" keys to names, standard errors apart."""
    figures = results["results"][task]
    better = results.get("higher_is_better", {}).get(task, {})
    metrics, stderr, higher = {}, {}, {}
    for key, value in figures.items():
        metric, comma, where = key.partition(",")
        if not comma or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        name = metric if where == "none" else key
        metrics[name] = float(value)
        error = figures.get(f"{metric}_stderr,{where}")
        if isinstance(error, (int, float)):
            stderr[name] = float(error)
        if metric in better:
            higher[name] = bool(better[metric])
    version = results.get("versions", {}).get(task)
    return TaskScore(metrics, stderr, higher, None if version is None else str(version))


def _documents(results: dict, task: str) -> int:
    samples = results.get("n-samples", {}).get(task, {})
    return int(samples.get("effective", 0))


def _close(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


@contextlib.contextmanager
def _quiet_harness(progress: bool = False):
    """The harness's warnings kept off the terminal and, unless `progress`, all it writes to standard error
    (its progress bars, and git's complaint when it looks for a commit outside a repository)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.nullcontext() if progress else _silenced_stderr():
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _silenced_stderr():
    """Standard error to /dev/null at the descriptor, so that child processes are silenced too."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            with contextlib.redirect_stderr(null):
                yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
