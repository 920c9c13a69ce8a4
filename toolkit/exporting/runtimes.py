"""The exported files run by the runtimes they are for: llama.cpp (through llama-cpp-python) and ONNX Runtime.

llama.cpp runs in a child process (`python -m toolkit.exporting.runtimes`, a JSON request on standard input):
when llama.cpp cannot load a LoRA file, llama-cpp-python keeps the NULL adapter and the process segfaults at
the first evaluation, and a crash must not take the caller with it. ONNX Runtime runs in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ToolkitError

LLAMA = "llama.cpp"
ONNX = "ONNX Runtime"
# runtime -> (module, what to install)
PACKAGES = {LLAMA: ("llama_cpp", "llama-cpp-python"), ONNX: ("onnxruntime", "onnxruntime")}


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(PACKAGES[runtime][0]) is not None


def missing(runtime: str) -> str:
    """What to say when a runtime is not installed."""
    return (
        f"{runtime} is not installed here ({PACKAGES[runtime][1]}), so nothing was run in it; "
        "install it with: pip install 'gpt2-adapt[export]'"
    )


def llama_logits(model: Path, rows: list[list[int]], lora: Path | None = None) -> np.ndarray:
    """llama.cpp's logits (rows, tokens, vocabulary) for each row of token ids, from a GGUF model and
    optionally a GGUF LoRA file applied at scale 1."""
    return _ask("logits", model, lora, rows=rows)


def llama_greedy(model: Path, prompts: list[str], max_new_tokens: int, lora: Path | None = None) -> list[str]:
    """The texts llama.cpp generates greedily after each prompt (tokenized by the GGUF file's own vocabulary)."""
    return _ask("greedy", model, lora, prompts=prompts, max_new_tokens=max_new_tokens)


def llama_rate(model: Path, prompt: str, new_tokens: int, repeats: int, lora: Path | None = None) -> float:
    """New tokens/s of llama.cpp generating exactly `new_tokens` tokens greedily after `prompt`, single stream,
    the prompt's processing included (as the toolkit's generation benchmark counts it); median of `repeats`."""
    return _ask("rate", model, lora, prompt=prompt, new_tokens=new_tokens, repeats=repeats)


def onnx_logits(folder: Path, rows: list[list[int]], past_from: int | None = None) -> np.ndarray:
    """ONNX Runtime's logits (rows, tokens, vocabulary) from folder/model.onnx. With `past_from`, the first
    `past_from` tokens run first and the rest run on their past key values, as a generation loop does."""
    import onnxruntime

    from .onnx_files import MODEL_FILE  # here: the llama.cpp child never pays for importing torch

    session = onnxruntime.InferenceSession(str(Path(folder) / MODEL_FILE), providers=["CPUExecutionProvider"])
    ids = np.asarray(rows, dtype=np.int64)
    names = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    shape = next(i.shape for i in session.get_inputs() if i.name.startswith("past_key_values."))
    past = [np.zeros((len(rows), shape[1], 0, shape[3]), dtype=np.float32) for _ in names]
    cut = past_from or ids.shape[1]
    logits = []
    for start, stop in ((0, cut), (cut, ids.shape[1])):
        if start == stop:
            continue
        feed = {
            "input_ids": ids[:, start:stop],
            "attention_mask": np.ones((len(rows), stop), dtype=np.int64),
            "position_ids": np.broadcast_to(np.arange(start, stop), (len(rows), stop - start)).copy(),
            **dict(zip(names, past)),
        }
        step, *past = session.run(None, feed)
        logits.append(step)
    return np.concatenate(logits, axis=1)


def _ask(task: str, model: Path, lora: Path | None, **fields):
    """Run one task in a llama.cpp child process; its answer comes back through a file (logits are large)."""
    with tempfile.TemporaryDirectory(prefix="gpt2-adapt-llama-") as scratch:
        out = Path(scratch) / ("answer.npy" if task == "logits" else "answer.json")
        request = {"task": task, "model": str(model), "lora": lora and str(lora), "out": str(out), **fields}
        result = subprocess.run(
            [sys.executable, "-m", __name__], input=json.dumps(request), text=True, capture_output=True, check=False
        )
        if result.returncode != 0:
            tail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
            crashed = " (it crashed: the LoRA file may not have loaded)" if result.returncode < 0 else ""
            raise ToolkitError(f"{LLAMA} could not run {Path(model).name}{crashed}: {tail}")
        return np.load(out) if task == "logits" else json.loads(out.read_text(encoding="utf-8"))


def _serve(request: dict) -> None:
    """In the child: load the model (and LoRA) in llama.cpp, answer the request into its `out` file."""
    import llama_cpp
    from llama_cpp import Llama

    # llama.cpp's AMX kernels (built for a CPU with AMX) segfaulted on Q8_0 weights in this release, at every
    # size tried (GPT-2 widths 32 to 1024: docs/export.md). Without the extra buffer types (llama-cli's
    # --no-repack) the plain CPU kernels run. Llama() does not expose that setting, so this child process
    # changes the default it starts from.
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_cpp.llama_cpp.llama_model_default_params = without_extra_buffers
    task = request["task"]
    # Checks run on one thread: llama.cpp's threads wait for each other by spinning, and on a busy machine one
    # descheduled thread made 12 tokens of a tiny model take 9 s instead of 2 ms. The speed measurement uses
    # every core this process may use, as torch does (llama-cpp-python's default takes half of them).
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = cores if task == "rate" else 1
    llm = Llama(
        model_path=request["model"],
        lora_path=request["lora"],
        n_ctx=0,
        logits_all=task == "logits",
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    if task == "logits":
        rows = []
        for row in request["rows"]:
            llm.reset()
            llm.eval(row)
            rows.append(np.array(llm.scores[: len(row)], dtype=np.float32))
        np.save(request["out"], np.stack(rows))
    elif task == "rate":
        rate = _rate(llm, request["prompt"], request["new_tokens"], request["repeats"])
        Path(request["out"]).write_text(json.dumps(rate), encoding="utf-8")
    else:
        texts = [_greedy(llm, prompt, request["max_new_tokens"]) for prompt in request["prompts"]]
        Path(request["out"]).write_text(json.dumps(texts), encoding="utf-8")


def _greedy(llm, prompt: str, max_new_tokens: int) -> str:
    """Greedy tokens until EOS or `max_new_tokens`, decoded as the toolkit decodes (bytes that are not whole
    UTF-8 characters become U+FFFD; llama-cpp-python's own completion text drops them)."""
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False)
    max_new_tokens = min(max_new_tokens, _positions(llm) - len(tokens))
    new = []
    for token in llm.generate(tokens, temp=0.0, repeat_penalty=1.0):
        if token == llm.token_eos() or len(new) >= max_new_tokens:
            break
        new.append(token)
    return llm.detokenize(new).decode("utf-8", errors="replace")


def _rate(llm, prompt: str, new_tokens: int, repeats: int) -> float:
    import itertools
    import statistics
    import time

    context = _positions(llm)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False)[: max(1, context - new_tokens)]
    new_tokens = min(new_tokens, context - len(tokens))
    times = []
    for run in range(repeats + 1):  # the first run warms up
        llm.reset()  # no prompt cache: every run processes the prompt
        started = time.perf_counter()
        for _ in itertools.islice(llm.generate(tokens, temp=0.0, repeat_penalty=1.0), new_tokens):
            pass
        if run:
            times.append(time.perf_counter() - started)
    return new_tokens / statistics.median(times)


def _positions(llm) -> int:
    """The model's own context (GPT-2's position embeddings): llama.cpp's context may be longer (256 at least),
    and a token past the positions aborts it rather than stopping."""
    import llama_cpp

    return llama_cpp.llama_model_n_ctx_train(llm.model)


if __name__ == "__main__":
    _serve(json.loads(sys.stdin.read()))
