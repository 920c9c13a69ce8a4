"""Helpers of the serving tests: the real app under uvicorn on a free port of 127.0.0.1 in a thread of
the test process, plain HTTP calls, metrics, adapters made in a fraction of a second, and prompt/completion
examples to train one on."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from conftest import SUBJECTS

QA_TEMPLATE = "Q: {prompt}\nA:"  # the template of the `qa` adapter (conftest's qa_store)
OBJECTS = ["the river", "a red ball", "the moon", "an apple", "a green door"]


def random_adapter(base: Path, folder: Path, seed: int, r: int = 4) -> Path:
    """A LoRA adapter with random A and B (peft's init_lora_weights=False): far from the base, so that
    each adapter's text differs from the others' and from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def add_adapter(store: Path, base: Path, name: str, seed: int, overwrite: bool = False) -> None:
    """Import a random adapter into a store, as `gpt2-adapt adapters import` does (manifest and all)."""
    import tempfile

    from toolkit.store.importing import import_adapter
    from toolkit.store.store import AdapterStore

    with tempfile.TemporaryDirectory() as scratch:
        source = random_adapter(base, Path(scratch) / name, seed)
        import_adapter(source, AdapterStore(store), name=name, base=str(base), overwrite=overwrite)


def qa_rows(n: int, seed: int) -> list[dict]:
    """Questions whose short answer the question holds: learnt, EOS included, in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        subject, thing = rng.choice(SUBJECTS), rng.choice(OBJECTS)
        rows.append({"prompt": f"{subject} finds {thing}. What does {subject} find?", "completion": f" {thing}."})
    return rows


@dataclass
class Reply:
    status: int
    headers: dict
    body: dict | str


@dataclass
class Running:
    url: str
    api_key: str | None = None

    @property
    def client(self):
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.api_key or "unused", max_retries=0, timeout=60)

    def call(
        self,
        method: str,
        path: str,
        body=None,
        *,
        raw: bytes | None = None,
        key: str | None = "default",
        timeout: float = 60,
    ) -> Reply:
        """One plain HTTP request (the openai client refuses to send malformed ones)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        key = self.api_key if key == "default" else key
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, headers, text = response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as err:
            status, headers, text = err.code, dict(err.headers), err.read().decode()
        try:
            return Reply(status, headers, json.loads(text))
        except ValueError:
            return Reply(status, headers, text)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics: 'name{label="value",...}' -> value (labels sorted)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.call("GET", "/metrics").body
        samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def served(**settings):
    """The app under uvicorn in a thread, on a free port, as `toolkit.serve` runs it; stopped (gracefully) on exit."""
    from toolkit.serving.app import create_app
    from toolkit.serving.server import uvicorn_server
    from toolkit.serving.settings import ServerSettings

    settings = ServerSettings(**{"grace": 5, **settings})
    app = create_app(settings)
    sock = free_socket()
    server = uvicorn_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{sock.getsockname()[1]}", settings.api_key)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextlib.contextmanager
def log_lines(name: str):
    """The messages logged on logger `name` (at INFO and above) while the block runs, as a list filled in
    place. A handler of its own: the CLI's logging set-up stops propagation to pytest's capture."""
    import logging

    logger, lines = logging.getLogger(name), []
    listener = logging.Handler()
    listener.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(listener)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        logger.removeHandler(listener)
        logger.setLevel(level)


@contextlib.contextmanager
def serve_process(store: Path, *options: str):
    """`gpt2-adapt serve` as a process of its own on a free port, once its /health answers; killed on exit
    if it is still running. Yields (the process, its Running)."""
    import os
    import subprocess
    import sys

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "toolkit.cli", "serve", "--store", str(store), "--port", str(port), *options],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    running = Running(f"http://127.0.0.1:{port}")

    def up():
        try:
            return running.call("GET", "/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(up, seconds=90, what="the server started")
        yield server, running
    finally:
        if server.poll() is None:
            server.kill()


def wait_for(condition, seconds: float = 20, what: str = "condition"):
    """Poll `condition` until it returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {seconds} s")


class Alone:
    """What `toolkit.generate` gives for each model alone (greedy): the reference every server output is
    compared with. One base in memory with the adapters asked for so far."""

    def __init__(self, store: Path, base: Path):
        self.store, self.base = store, base
        self.model = self.tokenizer = None

    def __call__(self, name: str | None, prompt: str, max_tokens: int) -> str:
        import toolkit

        if self.model is None:
            self.model, self.tokenizer = toolkit.load(base=str(self.base), store=self.store)
        if name is not None:
            self.model = toolkit.load_adapter(self.model, self.tokenizer, name, store=self.store)
        toolkit.use(self.model, name)
        return toolkit.generate(self.model, self.tokenizer, prompt, max_new_tokens=max_tokens, greedy=True)[0]
