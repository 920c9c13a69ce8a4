"""What each benchmark case measures, each run in a fresh process by `bench.runner`. The comparisons with other
pipelines (benchmarks/comparisons.py) time their training with `timed_training` too."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..hardware import memory_in_use, peak_memory
from .report import PARTS

# fp32 against an 8-bit base (without and with gradient checkpointing) and a 4-bit one, at the same precision
MEMORY_CASES = {
    "toolkit-fp32": {"training.precision": "fp32"},
    "toolkit-int8": {"training.precision": "fp32", "quantization.mode": "int8"},
    "toolkit-int8-checkpointing": {
        "training.precision": "fp32",
        "quantization.mode": "int8",
        "training.gradient_checkpointing": True,
    },
    "toolkit-nf4": {"training.precision": "fp32", "quantization.mode": "nf4"},
}
PROMPT = "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in"


@dataclass(frozen=True)
class Setup:
    model: str  # hub id or folder: its config and tokenizer (weights are random)
    texts: list[str]  # text files, one document per line
    work: str = ""  # scratch folder (filled in by run)
    block_size: int = 512
    batch_size: int = 2
    steps: int = 4  # timed steps per run, after one warm-up step
    repeats: int = 3
    eval_tokens: int = 16384
    new_tokens: int = 64
    clients: tuple[int, ...] = (1, 4, 16)  # of the serving table: concurrent clients per row
    parts: tuple[str, ...] = PARTS
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")


def train_case(setup: Setup, name: str, overrides: dict) -> dict:
    """`gpt2-adapt train` of the default recipe with `overrides`, timed (`name`: the row, and the adapter's
    name but for "toolkit", whose adapter is "bench": eval and generation use it)."""
    result = timed_training(setup, lambda timer: _toolkit(setup, name, overrides, timer))
    if name in MEMORY_CASES:  # after the peak is taken: what the base's weights alone occupy
        from ..modeling.base import base_from
        from ..records import ModelSource

        mode = overrides.get("quantization.mode", "none")
        base = base_from(ModelSource(str(Path(setup.work) / "base")), quantization=mode)
        result["weights_memory"] = base.get_memory_footprint()
    return result


def timed_training(setup: Setup, train: Callable[[StepTimer], dict]) -> dict:
    """train(timer)'s figures (it trains with the timer as a Trainer callback), with the tokens/s and memory
    of the run: the process's peak, and that peak less what the process held before any model or data."""
    # Libraries imported first: what they hold is the peak's part that training did not add, the same for
    # every case.
    import datasets  # noqa: F401
    import peft  # noqa: F401

    with contextlib.suppress(ImportError):
        import bitsandbytes  # noqa: F401
    baseline = memory_in_use(setup.device)
    timer = StepTimer(setup.device)
    result = train(timer)
    peak = peak_memory(setup.device)
    return result | {
        "steps": len(timer.marks),
        "tokens_per_second": timer.rate(),
        "peak_memory": peak,
        "training_memory": peak - baseline,
        "threads": torch.get_num_threads(),
    }


def _toolkit(setup: Setup, name: str, overrides: dict, timer) -> dict:
    import tomli_w

    from ..config.recipe import load_recipe
    from ..modeling.precision import training_precision
    from ..store.store import AdapterStore
    from ..training.train import train

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    recipe = {
        "model": {"name": str(work / "base")},
        "data": {
            "train_files": [str(work / "train.txt")],
            "eval_files": [str(work / "eval.txt")],
            "block_size": setup.block_size,
        },
        "training": {
            "max_steps": setup.steps + 1,
            "batch_size": setup.batch_size,
            "eval_every": 0,
            "save_every": 1_000_000,
            "log_every": 1_000_000,
        },
        "output": {"name": "bench" if name == "toolkit" else name},
    }
    path = work / f"{name}.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    loaded = load_recipe(path, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    train(loaded, AdapterStore(work / "store"), overwrite=True, callbacks=(timer,))
    return {"parameters": base_parameters(work / "base"), "precision": training_precision(loaded.training.precision)}


def plan_case(setup: Setup) -> dict:
    """`gpt2-adapt plan`'s memory estimate for each base precision at the benchmark's shape."""
    from transformers import AutoConfig

    from ..config.recipe import DataSpec, ModelSpec, Recipe, TrainingSpec
    from ..training.plan import PLANNED, memory_estimate, parameter_counts

    base = Path(setup.work) / "base"
    recipe = Recipe(
        model=ModelSpec(name=str(base)),
        data=DataSpec(train_files=["unused"], block_size=setup.block_size),
        training=TrainingSpec(batch_size=setup.batch_size),
    )
    config = AutoConfig.from_pretrained(base)
    counts = parameter_counts(recipe, config)
    return {precision: memory_estimate(recipe, config, counts, precision) for precision in PLANNED}


def eval_case(setup: Setup, precision: str, threads: int = 0) -> dict:
    """`gpt2-adapt eval` of the default run's adapter (and its base) on the training text."""
    from ..evaluation.evaluate import EvalOptions, evaluate_models, load_models, read_texts

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    texts = read_texts(files=(str(work / "train.txt"),))
    options = EvalOptions(max_tokens=setup.eval_tokens, context=setup.block_size, precision=precision, threads=threads)
    loaded = load_models(["bench"], store=str(work / "store"), precision=precision)
    rows = evaluate_models(loaded, options, texts)
    adapted = next(r for r in rows if r.adapter)
    return {
        "precision": precision,
        "tokens": adapted.score.tokens,
        "tokens_per_second": adapted.tokens_per_second,
        "threads": torch.get_num_threads(),
    }


def generation_case(setup: Setup) -> dict:
    """Greedy tokens/s of the base, the unmerged adapter and the merged model; switching and loading."""
    from transformers import AutoModelForCausalLM

    from ..generation.merging import merge
    from ..modeling.switching import use
    from ..store.loading import load, load_adapter

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    store = str(work / "store")
    base, tokenizer = load(base=str(work / "base"))
    result = {"base": _generation_rate(base.to(setup.device), tokenizer, setup)}
    del base
    model, _ = load(["bench", "toolkit-nodropout"], store=store)
    model.to(setup.device)
    use(model, "bench")
    result["unmerged"] = _generation_rate(model, tokenizer, setup)
    switches = []
    for i in range(100):
        started = time.perf_counter()
        use(model, "toolkit-nodropout" if i % 2 == 0 else "bench")
        switches.append(time.perf_counter() - started)
    result["switch_seconds"] = statistics.median(switches)
    loads = []
    for _ in range(3):
        model.delete_adapter("toolkit-nodropout")
        started = time.perf_counter()
        load_adapter(model, tokenizer, "toolkit-nodropout", store=store)
        loads.append(time.perf_counter() - started)
    result["load_seconds"] = statistics.median(loads)
    del model
    merged = merge("bench", work / "merged", store=store)
    result["merged"] = _generation_rate(
        AutoModelForCausalLM.from_pretrained(merged.path).to(setup.device).eval(), tokenizer, setup
    )
    result["llama_cpp"] = _llama_cpp_rates(setup, store)
    return result


def _llama_cpp_rates(setup: Setup, store: str) -> dict | None:
    """The same greedy generation in llama.cpp, on the adapter exported as GGUF (f32 and q8_0): a reference for
    what a CPU runtime built for inference does with this model. None where llama.cpp is not installed."""
    from ..exporting import runtimes
    from ..exporting.export import ADAPTER_FILE, BASE_FILE, MERGED_FILE, export

    if not runtimes.installed(runtimes.LLAMA):
        return None
    rates = {}
    for tensor_type in ("f32", "q8_0"):
        folder = export(
            "bench", Path(setup.work) / f"gguf-{tensor_type}", store=store, tensor_type=tensor_type, merged=True
        ).path
        rates[tensor_type] = {
            "unmerged": runtimes.llama_rate(
                folder / BASE_FILE, PROMPT, setup.new_tokens, setup.repeats, lora=folder / ADAPTER_FILE
            ),
            "merged": runtimes.llama_rate(folder / MERGED_FILE, PROMPT, setup.new_tokens, setup.repeats),
        }
    return rates


def _generation_rate(model, tokenizer, setup: Setup) -> float:
    """New tokens/s of greedy generation of exactly `new_tokens` tokens, median of `repeats`. PROMPT is cut to
    what leaves room for them in the model's context (a tiny model's tokenizer splits it finely)."""
    room = max(1, model.config.n_positions - setup.new_tokens)
    inputs = {key: ids[:, :room].to(setup.device) for key, ids in tokenizer(PROMPT, return_tensors="pt").items()}
    kwargs = {"do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    times = []
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        for _ in range(setup.repeats):
            sync(setup.device)
            started = time.perf_counter()
            model.generate(**inputs, max_new_tokens=setup.new_tokens, min_new_tokens=setup.new_tokens, **kwargs)
            sync(setup.device)
            times.append(time.perf_counter() - started)
    return setup.new_tokens / statistics.median(times)


def data_case(setup: Setup) -> dict:
    """Packing the text the first time (tokenize, pack, write the cache) and again (read from the cache)."""
    from ..config.recipe import DataSpec
    from ..data.packing import prepare_data
    from ..modeling.tokenizer import tokenizer_from
    from ..records import ModelSource

    work = Path(setup.work)
    tokenizer = tokenizer_from(ModelSource(str(work / "base")))
    spec = DataSpec(
        train_files=[str(work / "train.txt")], eval_files=[str(work / "eval.txt")], block_size=setup.block_size
    )
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        packed = prepare_data(spec, tokenizer, cache=work / "data-cache")
        seconds.append(time.perf_counter() - started)
    return {"tokens": packed.stats["train"]["tokens"], "first_seconds": seconds[0], "cached_seconds": seconds[1]}


class StepTimer(TrainerCallback):
    """Marks the time and the tokens seen at the end of every training step."""

    def __init__(self, device: str):
        self.device = device
        self.marks: list[tuple[float, int]] = []

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def rate(self) -> float:
        """Tokens per second from the end of the first step to the end of the last."""
        (start, seen), (end, total) = self.marks[0], self.marks[-1]
        return (total - seen) / (end - start)


def base_parameters(folder: Path) -> int:
    """The parameters of the model in `folder` (built on the meta device: nothing is allocated)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def quiet() -> None:
    import logging
    import warnings

    import datasets
    import transformers

    # Library notices (deprecations, 8-bit casts on every call) are not the benchmark's output.
    warnings.filterwarnings("ignore")
    logging.getLogger("toolkit").setLevel(logging.WARNING)
    for name in ("transformers", "peft", "bitsandbytes", "datasets", "accelerate", "evaluate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
