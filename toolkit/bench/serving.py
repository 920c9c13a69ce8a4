"""`gpt2-adapt bench --only serving`: `gpt2-adapt serve` under 1, 4 and 16 concurrent clients.

The server runs in its own process (`toolkit.serve`, what `gpt2-adapt serve` runs); the clients are
threads of the benchmark's process, each sending its requests one after the other (greedy, `new_tokens`
tokens each). Three servers of the same base and 16 adapters (LoRA r=16 on c_attn, random weights):
  (a) every client on one adapter;
  (b) each client on its own adapter, all 16 loaded;
  (c) each client on its own adapter, with a server that generates one request at a time (--max-batch 1).
Figures: generated tokens/s over the whole run, and each request's latency (p50, p95). Also the memory
an adapter adds to the server (its resident set, over 16 loads, against the adapter's file size), and
what continuous batching means here: how long a short request takes when it arrives while a long one is
generating, against the long one's own time.

How close that is to the machine: the pure decode loop, measured in the same run right after (b) at 16
clients: the same base and adapters loaded in this process, the same 16 rows each on its own adapter,
prefilled together and decoded greedily through the same key/value cache code (serving.engine), with no
server, HTTP, tokenizing or scheduling; the served tokens/s are reported as a share of it. Where the CPU
computes bf16 natively, (b) and the loop are measured again with the base in bf16 (`--precision bf16`).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Self

ADAPTERS = 16
REQUESTS_PER_CLIENT = 2
PROMPT = "The tower is 324 metres tall, about the same height as an 81-storey building, and the"


def serving_case(setup) -> dict:
    from ..store.store import AdapterStore

    work = Path(setup.work)
    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    store = work / "serving-store"
    names = make_adapters(work / "base", store, ADAPTERS)
    prompt, room = prompt_for(work / "base")
    tokens = min(setup.new_tokens // 2, room // 4)  # the joining test's long request is 4x as long
    result = {"new_tokens": tokens, "adapters": ADAPTERS, "requests_per_client": REQUESTS_PER_CLIENT}
    with Server(store, work / "base", prompt, max_batch=ADAPTERS) as server:
        result["memory"] = _memory(server, names, AdapterStore(store))
        _tell("memory", result["memory"])
        result["one_adapter"] = {c: _tell(f"(a) {c}", clients(server, [names[0]] * c, tokens)) for c in setup.clients}
        result["own_adapter"] = {c: _tell(f"(b) {c}", clients(server, names[:c], tokens)) for c in setup.clients}
        result["joining"] = _tell("joining", _joining(server, names, tokens))
    result["decode_loop"] = _tell("decode loop", _decode_loop(work / "base", store, names, prompt, tokens, "fp32"))
    with Server(store, work / "base", prompt, max_batch=1) as server:
        result["one_at_a_time"] = {c: _tell(f"(c) {c}", clients(server, names[:c], tokens)) for c in setup.clients}
    import torch

    from ..hardware import cpu_has_native_bf16

    if torch.cuda.is_available() or cpu_has_native_bf16():
        with Server(store, work / "base", prompt, max_batch=ADAPTERS, precision="bf16") as server:
            served = _tell("(b) 16, bf16", clients(server, names, tokens))
        loop = _tell("decode loop, bf16", _decode_loop(work / "base", store, names, prompt, tokens, "bf16"))
        result["bf16"] = {"own_adapter": served, "decode_loop": loop}
    return result


def _decode_loop(base: Path, store: Path, names: list[str], prompt: str, tokens: int, precision: str) -> dict:
    """The server's generation without the server: len(names) rows, each on its own adapter, prefilled
    together then decoded greedily `tokens` steps through serving.engine, REQUESTS_PER_CLIENT times."""
    from ..serving.engine import KVBatch
    from ..store.loading import load

    model, tokenizer = load(names, base=str(base), store=store, precision=precision)
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device

    def once(steps: int) -> None:
        batch, logits = KVBatch.prefill(model, [ids] * len(names), names, tokenizer.pad_token_id, device)
        for _ in range(steps - 1):
            logits = batch.step(model, logits.argmax(-1).tolist(), names)

    once(2)  # warm-up
    started = time.perf_counter()
    for _ in range(REQUESTS_PER_CLIENT):
        once(tokens)
    wall = time.perf_counter() - started
    return {"rows": len(names), "tokens_per_second": len(names) * tokens * REQUESTS_PER_CLIENT / wall}


def _tell(what: str, figures: dict) -> dict:
    """Each measurement as it is made, on standard error: a long run shows its progress."""
    print(f"  serving {what}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def make_adapters(base: Path, store: Path, count: int) -> list[str]:
    """Adapters like the default recipe's (r=16 on c_attn), with random weights, imported into a store."""
    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ..config.recipe import TARGET_PRESETS, LoraSpec
    from ..store.importing import import_adapter
    from ..store.store import AdapterStore

    lora = LoraSpec()
    names = [f"adapter{i:02d}" for i in range(count)]
    model = AutoModelForCausalLM.from_pretrained(base)
    with tempfile.TemporaryDirectory() as scratch:
        for i, name in enumerate(names):
            torch.manual_seed(i)
            config = LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                target_modules=TARGET_PRESETS[lora.targets],
                fan_in_fan_out=True,
                init_lora_weights=False,
                task_type="CAUSAL_LM",
            )
            peft_model = get_peft_model(model, config)
            peft_model.save_pretrained(Path(scratch) / name)
            model = peft_model.unload()  # the plain base back, for the next one
            import_adapter(Path(scratch) / name, AdapterStore(store), name=name, base=str(base))
    return names


def prompt_for(base: Path) -> tuple[str, int]:
    """PROMPT, cut to a quarter of the model's context (a tiny model's tokenizer splits it finely), and the
    room left after it for new tokens."""
    from transformers import AutoConfig, AutoTokenizer

    context = AutoConfig.from_pretrained(base).n_positions
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"][: context // 4]
    return tokenizer.decode(ids), context - len(ids)


# The server as a Python program starts it: OpenMP as torch loads it by default.
SERVE = "import json, sys, toolkit; toolkit.serve(**json.loads(sys.argv[1]))"
# As `gpt2-adapt serve` starts: OpenMP's wait policy set before torch loads (unless the environment sets one).
SERVE_AS_THE_CLI = "from toolkit.threads import prepare_openmp; prepare_openmp(); " + SERVE


class Server:
    """`toolkit.serve` in a process of its own on a free port, until the block ends (then SIGTERM)."""

    def __init__(
        self,
        store: Path,
        base: Path,
        prompt: str,
        max_batch: int,
        precision: str = "fp32",
        threads: int = 0,
        openmp_defaults: bool = False,
    ):
        """`openmp_defaults`: start the server with OpenMP as torch loads it by default (busy.py's "before")."""
        self.prompt = prompt
        self.command = SERVE if openmp_defaults else SERVE_AS_THE_CLI
        # No request timeout: a queue of one-at-a-time requests may wait long, which is what is measured.
        self.settings = {
            "store": str(store),
            "base": str(base),
            "max_batch": max_batch,
            "max_loaded": ADAPTERS,
            "max_queue": 256,
            "timeout": 86400.0,
            "precision": precision,
            "threads": threads,
        }

    def __enter__(self) -> Self:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        settings = json.dumps(self.settings | {"port": port})
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.command, settings], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {self.process.stderr.read()}") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(60)

    def complete(self, model: str, max_tokens: int) -> tuple[float, int]:
        """One greedy request: (seconds, tokens generated)."""
        body = json.dumps({"model": model, "prompt": self.prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
        request = urllib.request.Request(
            self.url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                usage = json.loads(response.read())["usage"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"the server answered {err.code}: {err.read().decode()}") from None
        return time.perf_counter() - started, usage["completion_tokens"]

    def rss(self) -> int:
        """The server process's resident set, in bytes."""
        from ..hardware import resident_memory

        return resident_memory(self.process.pid)


def clients(server: Server, models: list[str], tokens: int) -> dict:
    """len(models) clients at once, each sending REQUESTS_PER_CLIENT requests in turn to its model."""
    server.complete(models[0], 2)  # warm-up
    latencies, generated, failures = [], [], []
    start = threading.Barrier(len(models))

    def client(model: str) -> None:
        start.wait()
        try:
            for _ in range(REQUESTS_PER_CLIENT):
                seconds, count = server.complete(model, tokens)
                latencies.append(seconds)
                generated.append(count)
        except Exception as err:  # noqa: BLE001 - raised below, in the benchmark's thread
            failures.append(err)

    threads = [threading.Thread(target=client, args=(m,)) for m in models]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if failures:
        raise failures[0]
    cuts = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
    return {
        "tokens_per_second": sum(generated) / wall,
        "p50": statistics.median(latencies),
        "p95": cuts[18],
        "requests": len(latencies),
    }


def _memory(server: Server, names: list[str], store) -> dict:
    """What loading 16 adapters adds to the server's resident set, against their weights' file size."""
    for _ in range(2):  # the base's own allocations for a request, made before the first reading
        server.complete(names[0], 1)
    before = server.rss()
    for name in names[1:]:
        server.complete(name, 1)
    added = (server.rss() - before) / (len(names) - 1)
    file_size = (store.path(names[0]) / "adapter_model.safetensors").stat().st_size
    return {"per_adapter": added, "adapter_file": file_size}


def _joining(server: Server, names: list[str], tokens: int) -> dict:
    """A short request sent while a long one generates: how long it takes, against the long one alone."""
    long_tokens = tokens * 4
    alone, _ = server.complete(names[0], long_tokens)
    short_alone, _ = server.complete(names[1], tokens // 4)
    result = {}
    runner = threading.Thread(target=lambda: result.update(long=server.complete(names[0], long_tokens)[0]))
    runner.start()
    time.sleep(alone / 4)  # a quarter of the way into the long one
    result["short"], _ = server.complete(names[1], tokens // 4)
    runner.join()
    return {
        "long_tokens": long_tokens,
        "short_tokens": tokens // 4,
        "long_alone": alone,
        "short_alone": short_alone,
        "short_during_long": result["short"],
        "long_with_short": result["long"],
    }
