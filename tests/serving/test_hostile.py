"""What a hostile or unlucky client could do to a running server, each fault injected into a real server on
127.0.0.1: the store changing under it in every order, requests that cannot be sampled, a worker that dies,
damaged manifests, forged log lines, slow clients, docs behind the key, a pinned base revision."""

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from toolkit import AdapterStore
from toolkit.store.manifest import MANIFEST

from .servers import Alone, add_adapter, log_lines, served, wait_for

pytestmark = pytest.mark.slow  # real servers


def ask(running, model, prompt="The cat", max_tokens=8, **extra):
    return running.call(
        "POST",
        "/v1/completions",
        {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, **extra},
    )


def text(reply) -> str:
    assert reply.status == 200, reply.body
    return reply.body["choices"][0]["text"]


# ---------------------------------------------------------------- 1. the store changing under the server


def test_max_loaded_1_and_retrains_keep_every_model_served(tmp_path, tiny_model):
    """One adapter, then another with room for one, then a retrain of the first, then the base: each
    answer is `toolkit.generate`'s for that model at that moment (this hung for good before)."""
    root = tmp_path / "store"
    for i, name in enumerate(("a", "b")):
        add_adapter(root, tiny_model, name, seed=i)
    with served(store=str(root), max_loaded=1, timeout=30) as running:
        for name in ("a", "b", "a"):
            assert text(ask(running, name)) == Alone(root, tiny_model)(name, "The cat", 8)
        add_adapter(root, tiny_model, "a", seed=7, overwrite=True)  # retrained while a@... is loaded
        assert text(ask(running, "a")) == Alone(root, tiny_model)("a", "The cat", 8)
        add_adapter(root, tiny_model, "b", seed=8, overwrite=True)
        AdapterStore(root).remove("a")
        assert ask(running, "a").status == 404
        assert text(ask(running, "b")) == Alone(root, tiny_model)("b", "The cat", 8)
        assert text(ask(running, str(tiny_model))) == Alone(root, tiny_model)(None, "The cat", 8)


# ---------------------------------------------------------------- 2. one request never harms another


def nan_adapter(root: Path, base: Path, name: str) -> None:
    """An adapter whose weights are NaN: its logits cannot be sampled (nor argmax'd meaningfully)."""
    add_adapter(root, base, name, seed=5)
    weights = root / name / "adapter_model.safetensors"
    tensors = {k: v * float("nan") for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    # The manifest follows (as if trained so): the server verifies files, and must still refuse to sample.
    manifest = json.loads((root / name / MANIFEST).read_text())
    from toolkit.modeling.fingerprints import file_sha256

    manifest["files"]["adapter_model.safetensors"] = {"sha256": file_sha256(weights), "bytes": weights.stat().st_size}
    (root / name / MANIFEST).write_text(json.dumps(manifest))


def test_a_request_that_cannot_be_sampled_fails_alone(long_store, long_model, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(long_store, root)
    nan_adapter(root, long_model, "broken")
    with served(store=str(root), timeout=60) as running:
        long_reply = {}
        stream = threading.Thread(target=lambda: long_reply.update(r=ask(running, "l0", "The", 300)))
        stream.start()
        wait_for(lambda: running.metrics()["gpt2_adapt_running_rows"] >= 1, what="the long request generates")
        replies = []

        def hostile(i):
            replies.append(ask(running, "broken", max_tokens=5, temperature=[0, 0.7][i % 2], seed=i))

        threads = [threading.Thread(target=hostile, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stream.join(120)
        assert len(replies) == 6
        for reply in replies:
            assert reply.status == 500 and "not finite" in reply.body["error"]["message"], reply.body
        # The other client's generation was untouched: all its tokens, greedy equal to generate alone.
        assert long_reply["r"].body["usage"]["completion_tokens"] == 300
        assert text(long_reply["r"]) == Alone(root, long_model)("l0", "The", 300)
        assert running.call("GET", "/health").body == {"status": "ok"}


def test_a_temperature_below_a_thousandth_samples_greedily(many_adapters, tiny_model):
    with served(store=str(many_adapters)) as running:
        greedy = Alone(many_adapters, tiny_model)("a00", "The cat", 8)
        for temperature in (1e-38, 1e-300, 5e-324, 1e-4):
            assert text(ask(running, "a00", temperature=temperature, seed=3)) == greedy


class WorkerKilled(BaseException):
    """Not an Exception: nothing in the worker catches it, as with a fatal error."""


def test_a_dead_worker_answers_every_request_with_503_and_health_says_so(long_store, monkeypatch):
    from toolkit.serving import engine

    step = engine.KVBatch.step
    calls = []

    def dies_at_the_tenth_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise WorkerKilled()
        return step(self, *args, **kwargs)

    monkeypatch.setattr(engine.KVBatch, "step", dies_at_the_tenth_step)
    with served(store=str(long_store), max_batch=1) as running:
        replies = []
        threads = [
            threading.Thread(target=lambda m=m: replies.append(ask(running, m, "The", 200))) for m in ("l0", "l1")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(r.status for r in replies) == [503, 503]  # the running one and the queued one
        assert {r.body["error"]["code"] for r in replies} == {"worker_stopped"}
        health = running.call("GET", "/health")
        assert health.status == 503 and "WorkerKilled" in health.body["reason"]
        later = ask(running, "l0")
        assert later.status == 503 and "restart the server" in later.body["error"]["message"]


# ---------------------------------------------------------------- 3, 10. bounded work, slow clients


def test_slow_clients_are_cut_off(many_adapters):
    with served(store=str(many_adapters), read_timeout=1) as running:
        host, port = running.url.removeprefix("http://").split(":")
        trickling = []
        for _ in range(20):  # headers that never end
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
            trickling.append(sock)
        body = socket.create_connection((host, int(port)))  # a body that never comes whole
        body.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"model"'
        )
        started = time.monotonic()
        for sock in trickling:
            sock.settimeout(10)
            assert sock.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 10
        body.settimeout(10)
        answer = b""
        while chunk := body.recv(4096):  # the server answers, then closes: headers and body may come apart
            answer += chunk
        answer = answer.decode()
        assert answer.startswith("HTTP/1.1 408") and '"code":"timeout"' in answer.replace(" ", "")
        for sock in [*trickling, body]:
            sock.close()
        assert ask(running, "a00").status == 200


def test_health_answers_while_huge_requests_are_refused(many_adapters):
    """A body over the limit, 100,000 prompts, a prompt longer than any context: each refused before
    tokenizing, while /health keeps answering."""
    with served(store=str(many_adapters)) as running:
        statuses = []
        stop = threading.Event()

        def probe():
            while not stop.is_set():
                statuses.append(running.call("GET", "/health", timeout=10).status)
                time.sleep(0.02)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            huge = [{"prompt": ["a"] * 100_000}, {"prompt": "word " * 150_000}, {"prompt": [[1, 2]] * 50_000}]
            for body in huge * 3:
                assert ask(running, "a00", **body).status in (400, 413)
        finally:
            stop.set()
            prober.join(10)
        # /health kept answering throughout (its time is bounded by the soak test, not here)
        assert statuses and set(statuses) == {200}


# ---------------------------------------------------------------- 4, 5. damaged records


def test_a_damaged_manifest_marks_its_own_card_and_the_others_are_listed(tmp_path, many_adapters):
    root = tmp_path / "store"
    for name in ("a00", "a01", "a02"):
        shutil.copytree(many_adapters / name, root / name)
    for name, damage in (("a01", {"created": 12345}), ("a02", {"base": {"name": 5}})):
        manifest = json.loads((root / name / MANIFEST).read_text())
        manifest.update(damage)
        (root / name / MANIFEST).write_text(json.dumps(manifest))
    with served(store=str(root)) as running:
        reply = running.call("GET", "/v1/models")
        assert reply.status == 200
        cards = {card["id"]: card for card in reply.body["data"]}
        assert {"a00", "a01", "a02"} <= set(cards)
        assert cards["a00"]["error"] is None
        assert "created is '12345'" in cards["a01"]["error"]
        assert "base.name is '5'" in cards["a02"]["error"]
        assert running.client.models.list().data  # the official client reads the listing


# ---------------------------------------------------------------- 6. the access log


def test_the_access_log_cannot_be_forged(many_adapters):
    forged = "/x%0a127.0.0.1:1%20%22POST%20/v1/completions%22%20200%200.1s%20model=a00"
    with log_lines("toolkit.serving.access") as lines, served(store=str(many_adapters)) as running:
        assert running.call("GET", forged).status == 404
    assert len(lines) == 1 and "\n" not in lines[0] and "\\n127.0.0.1:1" in lines[0], lines


# ---------------------------------------------------------------- 9, 12. docs, HEAD, small ones


def test_with_a_key_the_api_docs_are_not_served(many_adapters):
    with served(store=str(many_adapters), api_key="sesame", max_loaded=2) as running:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert running.call("GET", path, key=None).status == 404, path
            assert running.call("GET", path).status == 404, path
    with served(store=str(many_adapters), max_loaded=2) as running:
        assert running.call("GET", "/openapi.json").status == 200
        assert running.call("HEAD", "/").status == 200


def test_the_404_lists_only_what_the_server_serves(tmp_path, many_adapters):
    root = tmp_path / "store"
    shutil.copytree(many_adapters / "a00", root / "a00")
    (root / "linked").symlink_to(many_adapters / "a01", target_is_directory=True)
    with served(store=str(root)) as running:
        reply = ask(running, "ghost")
        assert reply.status == 404 and "a00" in reply.body["error"]["message"]
        assert "linked" not in reply.body["error"]["message"]
        assert "linked" not in {m["id"] for m in running.call("GET", "/v1/models").body["data"]}


# ---------------------------------------------------------------- 13. a pinned base revision


def hub_cache_with_two_revisions(home: Path, tiny_model: Path, repo: str) -> tuple[str, str]:
    """The local Hugging Face cache holding two commits of `repo` with different weights; main is the
    newer. Returns (older, newer) commit hashes."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = home / "hub" / ("models--" + repo.replace("/", "--"))
    older, newer = "1" * 40, "2" * 40
    for commit, seed in ((older, 0), (newer, 1)):
        snapshot = folder / "snapshots" / commit
        shutil.copytree(tiny_model, snapshot)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.5)
        model.save_pretrained(snapshot)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(newer)
    return older, newer


def test_the_base_is_served_at_the_revision_its_adapters_record(tmp_path, tiny_model, monkeypatch):
    import os

    import toolkit
    from toolkit.store.importing import import_adapter

    from .servers import random_adapter

    repo = "tiny-org/tiny-gpt2"
    older, _ = hub_cache_with_two_revisions(Path(os.environ["HF_HOME"]), tiny_model, repo)
    source = random_adapter(
        Path(os.environ["HF_HOME"]) / "hub" / f"models--tiny-org--tiny-gpt2/snapshots/{older}",
        tmp_path / "pinned",
        seed=3,
    )
    config = json.loads((source / "adapter_config.json").read_text())
    config.update(base_model_name_or_path=repo, revision=older)  # trained on the older commit, pinned
    (source / "adapter_config.json").write_text(json.dumps(config))
    root = tmp_path / "store"
    import_adapter(source, AdapterStore(root), name="pinned")
    model, tokenizer = toolkit.load("pinned", store=root)
    expected = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=8, greedy=True)[0]
    with served(store=str(root)) as running:
        assert text(ask(running, "pinned")) == expected
        cards = running.call("GET", "/v1/models").body["data"]
        assert cards[0]["id"] == repo
