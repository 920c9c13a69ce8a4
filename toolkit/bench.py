"""`gpt2-adapt bench`: training, memory, evaluation, generation and data preparation speed on this machine,
side by side with the two ways people train GPT-2 without the toolkit.

The model has the architecture of `setup.model` (a hub id or a folder: only its config and tokenizer are
read) with random weights: speed and memory do not depend on the weights. Every measurement runs in a
fresh process, so that each peak memory is its own (a CPU process's peak RSS never goes down) and one
failing case does not take the table with it. Training speed is timed from the end of the first step
(warm-up) to the end of the last, over `steps` steps, and the median of `repeats` runs is reported.

The cases:
- seed: the 2022 write-up's pipeline. Each line is tokenized and padded to the longest line of its
  `datasets.map` batch, batches are padded again by DataCollatorForLanguageModeling, and all of GPT-2 is
  fine-tuned in fp32. Only its non-padding tokens count as useful.
- peft: plain peft + Trainer written the obvious way: run_clm's packing (concatenate, cut into blocks),
  the same LoRA as the toolkit's default (r=16 on c_attn), fp32.
- toolkit: `gpt2-adapt train` with the default recipe at the same batch shape; then with
  training.base_dropout=false, and the fp32 and 8-bit bases for the memory comparison.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from .bench_report import PARTS, describe_machine

# fp32 against an 8-bit base, at the same precision, without and with gradient checkpointing
MEMORY_CASES = {
    "toolkit-fp32": {"training.precision": "fp32"},
    "toolkit-int8": {"training.precision": "fp32", "quantization.mode": "int8"},
    "toolkit-int8-checkpointing": {"training.precision": "fp32", "quantization.mode": "int8",
                                   "training.gradient_checkpointing": True},
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
    parts: tuple[str, ...] = PARTS
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")


def run(setup: Setup, report=print) -> dict:
    """Every measurement of `setup.parts`, in fresh processes; `report` is called with each line of progress."""
    with tempfile.TemporaryDirectory(prefix="gpt2-adapt-bench-") as work:
        setup = Setup(**{**asdict(setup), "work": work})
        results: dict = {"setup": asdict(setup) | {"work": None}, "machine": _in_child(_machine, setup)}
        report(describe_machine(results["machine"]))
        _prepare(setup)
        # The toolkit's runs come first: eval uses the default run's adapter, generation switches between both.
        cases = []
        if {"training", "eval", "generation"} & set(setup.parts):
            cases.append(("toolkit", {}))
        if {"training", "generation"} & set(setup.parts):
            cases.append(("toolkit-nodropout", {"training.base_dropout": False}))
        if "training" in setup.parts:
            cases += [("peft", None), ("seed", None)]
        if "memory" in setup.parts:
            cases += list(MEMORY_CASES.items())
        training = results["training"] = {}
        for name, overrides in cases:
            repeats = 1 if name in MEMORY_CASES else setup.repeats  # memory does not vary from run to run
            runs = [_in_child(_train_case, setup, name, overrides) for _ in range(repeats)]
            training[name] = _median_run(runs)
            report(f"  {name}: {training[name]['tokens_per_second']:,.1f} useful tokens/s, "
                   f"peak {training[name]['peak_memory'] / 2**30:.2f} GiB")
        if "eval" in setup.parts:
            results["eval"] = [_in_child(_eval_case, setup, precision) for precision in ("fp32", "bf16")]
        if "generation" in setup.parts:
            results["generation"] = _in_child(_generation_case, setup)
        if "data" in setup.parts:
            results["data"] = _in_child(_data_case, setup)
    return results


def _in_child(function, *args):
    """Run function(*args) in a new process (spawned: no state shared with this one) and return its result."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_child, function, *args).result()


def _child(function, *args):
    import sys

    sys.stdout = sys.stderr  # the Trainer prints its summary; standard output is the table's (or the JSON's)
    _quiet()
    return function(*args)


def _median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda r: r["tokens_per_second"])
    median = dict(ordered[len(ordered) // 2])
    median["runs"] = [r["tokens_per_second"] for r in runs]
    return median


# ---------------------------------------------------------------- set-up (in this process)


def _prepare(setup: Setup) -> None:
    """The random-weight base folder, the training text and a small evaluation text."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from .model import tokenizer_from
    from .sources import model_source

    _quiet()
    work = Path(setup.work)
    source = model_source(setup.model, "main", key="--model")
    config = AutoConfig.from_pretrained(**source)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "base")
    tokenizer_from(source, setup.model).save_pretrained(work / "base")
    lines = [line for path in setup.texts for line in Path(path).read_text(encoding="utf-8").splitlines()]
    (work / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Training's own evaluations (base and final) are not timed; a few blocks keep them short.
    (work / "eval.txt").write_text("\n".join(lines[:200]) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- measurements (each in a fresh process)


def _machine(setup: Setup) -> dict:
    return {
        "device": setup.device,
        "name": torch.cuda.get_device_name() if setup.device == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemm_peak_flops": {"bf16": _gemm_peak(torch.bfloat16, setup.device), "fp32": _gemm_peak(torch.float32, setup.device)},
    }


def _gemm_peak(dtype: torch.dtype, device: str) -> float:
    """The best FLOP/s of square matrix products: the peak the training figures are measured against."""
    best = 0.0
    for n in (1024, 2048, 4096) if device == "cpu" else (4096, 8192):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(4):
            _sync(device)
            started = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


def _train_case(setup: Setup, name: str, overrides: dict | None) -> dict:
    # What the process holds before any model or data (libraries imported): the peak's part that training
    # did not add, the same for every case.
    import datasets  # noqa: F401
    import peft  # noqa: F401

    with contextlib.suppress(ImportError):
        import bitsandbytes  # noqa: F401
    baseline = _memory_now(setup.device)
    timer = StepTimer(setup.device)
    if name == "seed":
        result = _seed_pipeline(setup, timer)
    elif name == "peft":
        result = _plain_peft(setup, timer)
    else:
        result = _toolkit(setup, name, overrides, timer)
    peak = _peak_memory(setup.device)
    result |= {"steps": len(timer.marks), "tokens_per_second": timer.rate(), "peak_memory": peak,
               "training_memory": peak - baseline}
    if name in MEMORY_CASES:  # after the peak is taken: what the base's weights alone occupy
        from .model import base_from

        int8 = overrides.get("quantization.mode") == "int8"
        base = base_from({"pretrained_model_name_or_path": str(Path(setup.work) / "base")}, int8=int8)
        result["weights_memory"] = base.get_memory_footprint()
    return result


def _toolkit(setup: Setup, name: str, overrides: dict, timer) -> dict:
    import tomli_w

    from .model import resolve_precision
    from .recipe import load_recipe
    from .store import AdapterStore
    from .train import train

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    recipe = {
        "model": {"name": str(work / "base")},
        "data": {"train_files": [str(work / "train.txt")], "eval_files": [str(work / "eval.txt")],
                 "block_size": setup.block_size},
        "training": {"max_steps": setup.steps + 1, "batch_size": setup.batch_size, "eval_every": 0,
                     "save_every": 1_000_000, "log_every": 1_000_000},
        "output": {"name": "bench" if name == "toolkit" else name},
    }
    path = work / f"{name}.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    loaded = load_recipe(path, [f"{key}={json.dumps(value)}" for key, value in overrides.items()])
    train(loaded, AdapterStore(work / "store"), overwrite=True, callbacks=(timer,))
    return {"parameters": _base_parameters(work / "base"), "precision": resolve_precision(loaded.training.precision)}


def _plain_peft(setup: Setup, timer) -> dict:
    """LoRA the way the peft and transformers examples put it together: run_clm packing, fp32, Trainer."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, default_data_collator

    from .recipe import TARGET_PRESETS, LoraSpec

    base = Path(setup.work) / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    lines = Dataset.from_dict({"text": (Path(setup.work) / "train.txt").read_text(encoding="utf-8").splitlines()})
    tokens = lines.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])

    def group(batch):  # run_clm's group_texts: concatenate everything, cut into blocks, drop the remainder
        ids = [t for row in batch["input_ids"] for t in row]
        cut = len(ids) // setup.block_size * setup.block_size
        blocks = [ids[i : i + setup.block_size] for i in range(0, cut, setup.block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * setup.block_size for _ in blocks], "labels": blocks}

    blocks = tokens.map(group, batched=True, remove_columns=tokens.column_names)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraSpec()  # the same adapter as the toolkit's default recipe
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=TARGET_PRESETS[lora.targets], fan_in_fan_out=True, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    Trainer(model=model, args=_arguments(setup, "peft"), train_dataset=blocks,
            data_collator=default_data_collator, callbacks=[timer]).train()
    return {"parameters": _base_parameters(base), "precision": "fp32"}


def _seed_pipeline(setup: Setup, timer) -> dict:
    """The 2022 write-up's pipeline, mended only where today's libraries refuse it: pad = EOS (GPT-2 has
    no pad token) and labels from the collator (the seed passed none, so nothing trained)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer

    base = Path(setup.work) / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    lines = Dataset.from_dict({"text": (Path(setup.work) / "train.txt").read_text(encoding="utf-8").splitlines()})
    padded = lines.map(lambda b: tokenizer(b["text"], padding=True, truncation=True), batched=True,
                       remove_columns=["text"])
    masks = padded["attention_mask"]
    useful, positions = sum(map(sum, masks)), sum(map(len, masks))
    model = AutoModelForCausalLM.from_pretrained(base)  # every weight trains
    Trainer(model=model, args=_arguments(setup, "seed", non_padding=True), train_dataset=padded,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False), callbacks=[timer]).train()
    return {"parameters": _base_parameters(base), "precision": "fp32", "padding_share": 1 - useful / positions}


def _arguments(setup: Setup, name: str, non_padding: bool = False):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(setup.work) / name), max_steps=setup.steps + 1,
        per_device_train_batch_size=setup.batch_size, learning_rate=2e-4, save_strategy="no",
        logging_steps=1_000_000, report_to="none", use_cpu=setup.device == "cpu", seed=42,
        include_num_input_tokens_seen="non_padding" if non_padding else "all", disable_tqdm=True,
    )


def _eval_case(setup: Setup, precision: str) -> dict:
    """`gpt2-adapt eval` of the default run's adapter (and its base) on the training text."""
    from .eval_run import EvalOptions, read_texts, run

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    texts = read_texts(files=(str(work / "train.txt"),))
    options = EvalOptions(max_tokens=setup.eval_tokens, context=setup.block_size, precision=precision)
    rows = run(texts, options, adapters=["bench"], store=str(work / "store"))
    adapted = next(r for r in rows if r["adapter"])
    return {"precision": precision, "tokens": adapted["tokens"], "tokens_per_second": adapted["tokens_per_second"]}


def _generation_case(setup: Setup) -> dict:
    """Greedy tokens/s of the base, the unmerged adapter and the merged model; switching and loading."""
    from transformers import AutoModelForCausalLM

    from . import generation, loading, merging

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    store = str(work / "store")
    base, tokenizer = loading.load(base=str(work / "base"))
    result = {"base": _generation_rate(base.to(setup.device), tokenizer, setup)}
    del base
    model, _ = loading.load(["bench", "toolkit-nodropout"], store=store)
    model.to(setup.device)
    generation.use(model, "bench")
    result["unmerged"] = _generation_rate(model, tokenizer, setup)
    switches = []
    for i in range(100):
        started = time.perf_counter()
        generation.use(model, "toolkit-nodropout" if i % 2 == 0 else "bench")
        switches.append(time.perf_counter() - started)
    result["switch_seconds"] = statistics.median(switches)
    loads = []
    for _ in range(3):
        model.delete_adapter("toolkit-nodropout")
        started = time.perf_counter()
        generation.load_adapter(model, tokenizer, "toolkit-nodropout", store=store)
        loads.append(time.perf_counter() - started)
    result["load_seconds"] = statistics.median(loads)
    del model
    merged = merging.merge("bench", work / "merged", store=store)
    result["merged"] = _generation_rate(AutoModelForCausalLM.from_pretrained(merged.path).to(setup.device).eval(),
                                        tokenizer, setup)
    return result


def _generation_rate(model, tokenizer, setup: Setup) -> float:
    """New tokens/s of greedy generation of exactly `new_tokens` tokens, median of `repeats`."""
    inputs = tokenizer(PROMPT, return_tensors="pt").to(setup.device)
    kwargs = {"do_sample": False, "pad_token_id": tokenizer.eos_token_id}
    times = []
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, **kwargs)  # warm-up
        for _ in range(setup.repeats):
            _sync(setup.device)
            started = time.perf_counter()
            model.generate(**inputs, max_new_tokens=setup.new_tokens, min_new_tokens=setup.new_tokens, **kwargs)
            _sync(setup.device)
            times.append(time.perf_counter() - started)
    return setup.new_tokens / statistics.median(times)


def _data_case(setup: Setup) -> dict:
    """Packing the text the first time (tokenize, pack, write the cache) and again (read from the cache)."""
    from .data import prepare_data
    from .model import tokenizer_from
    from .recipe import DataSpec

    work = Path(setup.work)
    tokenizer = tokenizer_from({"pretrained_model_name_or_path": str(work / "base")})
    spec = DataSpec(train_files=[str(work / "train.txt")], eval_files=[str(work / "eval.txt")],
                    block_size=setup.block_size)
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
        _sync(self.device)
        self.marks.append((time.perf_counter(), state.num_input_tokens_seen))

    def rate(self) -> float:
        """Tokens per second from the end of the first step to the end of the last."""
        (start, seen), (end, total) = self.marks[0], self.marks[-1]
        return (total - seen) / (end - start)


def _base_parameters(folder: Path) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).parameters())


def _memory_now(device: str) -> int:
    if device == "cuda":
        return torch.cuda.memory_allocated()
    try:  # resident pages x page size (Linux)
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _peak_memory(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _quiet() -> None:
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


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
