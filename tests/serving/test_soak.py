"""The soak test of issue 23, standing for all of it: a real `gpt2-adapt serve` process under about a minute of
good clients (greedy, seeded samples, streams, chat, a mix), hostile ones (the issue's absurd numbers, bodies
and names, slow senders) and clients that leave, while one adapter is retrained twice and another is removed.
At the end: every good request got the right answer (greedy text equal to `toolkit.generate` for a version of
the adapter that was in the store while the request ran), every request got an answer and the server was done
with those whose client left, every hostile one got its 4xx and an OpenAI-style error body, /health (polled
by a process of its own) never took more than 100 ms, the server's memory stayed within a bound of where it
was after warm-up, and SIGTERM ended it with status 0 within its grace period, with nothing in its log that
tells of a bug. Every failed check is reported together, so that one run says all that went wrong."""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pytest

import toolkit
from toolkit.serving.settings import ServerSettings
from toolkit.store.store import AdapterStore

from .servers import Alone, Running, add_adapter, free_socket, wait_for

pytestmark = pytest.mark.slow  # a real server process, for about a minute

LOAD_SECONDS = 60  # of load; then the clients finish what they sent
RETRAINS = {15: 1000, 35: 1001}  # seconds into the load -> seed of the retrained `a00`
REMOVE_AT = 25  # seconds into the load at which `a03` is removed
GRACE = 10  # the server's --grace, in seconds
HEALTH_LIMIT = 0.100  # seconds /health may take, measured by the client (issue 23.3)
# The server's RSS may grow this much from warm-up to the end. The tiny model and its adapters weigh a few MB
# and every body is at most --max-body (1 MiB), so what grows by more than glibc's per-thread arenas and
# torch's allocator caches (tens of MB) is something kept per request: ~2,000 requests holding even 100 KB each.
RSS_BOUND_MIB = 200
READ_TIMEOUT = 5  # the server's --read-timeout, in seconds: slow clients are cut off within the load
MAX_BODY = 1 << 20  # the server's --max-body (its default), in bytes
MAX_QUEUE = ServerSettings().max_queue

PROMPTS = ["The cat", "my sister likes", "a dog sees the moon", ""]
QUESTION = "the cat finds the moon. What does the cat find?"  # for the prompt/completion adapter `qa`
MIX = "a01=0.7,a02=0.3"
TOKENS = 16


@dataclass
class Outcome:
    """One request a client sent, and what came back (an exception's repr when nothing did)."""

    kind: str
    sent: float
    answered: float | None = None
    status: int | None = None
    body: object = None
    text: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


class Ledger:
    """Every request of the soak, per kind, as threads record them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []

    def record(self, kind: str, send, **extra) -> Outcome:
        """Send one request with `send()` -> (status, body, text); an exception is recorded as no answer."""
        outcome = Outcome(kind, time.monotonic(), extra=extra)
        try:
            outcome.status, outcome.body, outcome.text = send()
            outcome.answered = time.monotonic()
        except Exception as err:  # noqa: BLE001 - a request with no answer is what this test counts
            outcome.error = repr(err)
        with self.lock:
            self.outcomes.append(outcome)
        return outcome

    def of(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind]


# ---------------------------------------------------------------- raw HTTP, for what `openai` will not send


def raw_request(port: int, path: str, body: bytes, headers: dict | None = None, timeout: float = 60) -> tuple:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        data = response.read().decode()
    finally:
        connection.close()
    try:
        return response.status, json.loads(data), None
    except ValueError:
        return response.status, data, None


def trickle_headers(port: int, limit: float) -> tuple:
    """Send a request's headers a line every half second, never ending them: the server must close the
    connection (issue 23.10). Returns (None, None, seconds until it closed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    started = time.monotonic()
    try:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        while time.monotonic() < started + limit:
            try:
                sock.sendall(b"X-Slow: still sending\r\n")
                if sock.recv(1) == b"":
                    return None, None, time.monotonic() - started
            except TimeoutError:
                continue
            except OSError:  # reset by the server
                return None, None, time.monotonic() - started
        raise TimeoutError(f"the server kept a connection whose headers never ended open for {limit} s")
    finally:
        sock.close()


def trickle_body(port: int, limit: float) -> tuple:
    """Send whole headers, then a body of 200 bytes at a byte every half second: the server must answer 408
    (issue 23.10). Returns (status, body, None)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=limit)
    try:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 200\r\n\r\n{"
        )
        sock.settimeout(0.5)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                sock.recv(1, socket.MSG_PEEK)  # an answer has come (or the connection closed: begin() says so)
            except TimeoutError:
                sock.sendall(b" ")
                continue
            break
        else:
            raise TimeoutError(f"the server waited {limit} s for a body sent a byte every half second")
        sock.settimeout(10)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read().decode()), None
    finally:
        sock.close()


def chunked_too_large(port: int) -> tuple:
    """A body over --max-body without a Content-Length (chunked): the server finds out while reading it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        try:
            for _ in range(MAX_BODY // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered and closed before the rest was sent: read what it said
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read().decode()), None
    finally:
        sock.close()


def open_stream(port: int, body: dict) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, bytes]:
    """A streamed request, up to its first event: (connection, response, that event's line)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request(
        "POST",
        "/v1/completions",
        body=json.dumps({**body, "stream": True}),
        headers={"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    first = response.readline()
    while first == b"\n":
        first = response.readline()
    return connection, response, first


def leave_mid_stream(port: int) -> tuple:
    """Start a stream, read its first event, and go: the server must stop that generation only."""
    body = {"model": "a01", "prompt": "The", "max_tokens": 60, "temperature": 0}
    connection, response, first = open_stream(port, body)
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    return response.status, None, first.decode()


def leave_waiting(port: int) -> tuple:
    """Send a request (not streamed) and go before its answer: the server must stop it and be done with it.
    Returns (None, None, the client's port, by which the access log names the request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        body = json.dumps({"model": "a01", "prompt": "The", "max_tokens": 60, "temperature": 0}).encode()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        time.sleep(0.3)
        return None, None, sock.getsockname()[1]


# ---------------------------------------------------------------- the server process


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class ServerLog:
    """The server's output, each line with the time it came (read as it comes: a full pipe would stop the server)."""

    def __init__(self, stream):
        self.lines: list[tuple[float, str]] = []
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def text(self, since: float | None = None) -> str:
        """All of it; or from a second before `since` (a time.monotonic()), timed from it, tracebacks left out."""
        self.thread.join(10)
        if since is None:
            return "\n".join(line for _, line in self.lines)
        return "\n".join(
            f"{at - since:+7.2f} s {line}"
            for at, line in self.lines
            if at >= since - 1 and not line.startswith((" ", "Traceback"))
        )


def start_server(store) -> tuple[subprocess.Popen, int, ServerLog]:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolkit.cli",
            "serve",
            "--store",
            str(store),
            "--port",
            str(port),
            "--grace",
            str(GRACE),
            "--max-body",
            str(MAX_BODY),
            "--read-timeout",
            str(READ_TIMEOUT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    log = ServerLog(server.stdout)
    running = Running(f"http://127.0.0.1:{port}")

    def up():
        assert server.poll() is None, "the server exited while starting:\n" + log.text()
        try:
            return running.call("GET", "/health", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, seconds=120, what="the server started")
    return server, port, log


# ---------------------------------------------------------------- references, computed before the load


@dataclass(frozen=True)
class References:
    versions: list[dict[str, str]]  # of `a00`, per version: prompt -> greedy text
    greedy: dict[tuple[str | None, str], str]  # (model, prompt) -> greedy text, for the models that do not change
    mix: dict[str, str]
    chat: str


def references(root, tiny_model, scratch) -> References:
    prompts = PROMPTS
    alone = Alone(root, tiny_model)
    greedy = {(name, p): alone(name, p, TOKENS) for name in (None, "a01", "a02", "a03") for p in prompts}
    versions = [{p: alone("a00", p, TOKENS) for p in prompts}]
    for number, seed in enumerate(RETRAINS.values(), 1):
        store = scratch / f"a00-version-{number}"
        add_adapter(store, tiny_model, "a00", seed=seed)  # as the retrain below will make it
        versions.append({p: Alone(store, tiny_model)("a00", p, TOKENS) for p in prompts})
    assert len({v["The cat"] for v in versions}) == len(versions)  # the versions can be told apart
    model, tokenizer = toolkit.load(["a01", "a02"], store=root)
    toolkit.mix(model, {"a01": 0.7, "a02": 0.3})
    mix = {p: toolkit.generate(model, tokenizer, p, max_new_tokens=TOKENS, greedy=True)[0] for p in prompts}
    return References(versions, greedy, mix, alone("qa", QUESTION, 12))


# ---------------------------------------------------------------- the hostile requests

SURROGATE = b'{"model": "a01", "prompt": "The \\ud800 cat", "max_tokens": 3}'
HOSTILE = [  # (name, raw body, status, code or None, param or None, words in the message)
    ("seed 2**64", {"model": "a01", "prompt": "The", "seed": 2**64}, 400, None, "seed", "less than or equal to"),
    (
        "mix weights of 1e30",
        {"model": "a01=1e30,a02=1e30", "prompt": "The", "temperature": 1.0},
        400,
        None,
        "model",
        "beyond +-100",
    ),
    (
        "prompts x n beyond the queue",
        {"model": "a01", "prompt": ["a"] * 5, "n": 16},
        400,
        None,
        "n",
        f"more than this server queues at once ({MAX_QUEUE})",
    ),
    (
        "a body over --max-body",
        b'{"model": "a01", "prompt": "' + b"x" * MAX_BODY + b'"}',
        413,
        "body_too_large",
        None,
        f"at most {MAX_BODY}",
    ),
    ("a lone surrogate", SURROGATE, 400, None, "prompt", "lone surrogate"),
    (
        "a model name of 2,000 characters",
        {"model": "m" * 2000, "prompt": "The"},
        404,
        "model_not_found",
        "model",
        "(2000 characters)",
    ),
    ("a mix of 17 adapters", {"model": ",".join(["a01"] * 17), "prompt": "The"}, 400, None, "model", "at most 16"),
    ("malformed JSON", b'{"model": "a01", "prompt": ', 400, None, None, "not valid JSON"),
    (
        "chat with a lone surrogate",
        b'{"model": "qa", "messages": [{"role": "user", "content": "\\udfff"}]}',
        400,
        None,
        "messages",
        "lone surrogate",
    ),
]


def as_bytes(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


# /health polled every 50 ms by a process of its own: what it measures is the server, not this process's
# client threads holding the GIL. Prints [(seconds a poll took, its status or None, when: monotonic time)].
POLLER = """
import http.client, json, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
polls, end = [], time.monotonic() + seconds
while time.monotonic() < end and len(polls) < 5000:
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/health")
        status = connection.getresponse().status
        connection.close()
    except OSError:
        status = None
    took = time.perf_counter() - started
    polls.append((took, status, time.monotonic()))
    time.sleep(max(0.05 - took, 0))
print(json.dumps(polls))
"""


# ---------------------------------------------------------------- the test


def test_a_minute_of_good_and_hostile_clients_while_the_store_changes(tmp_path, many_adapters, qa_store, tiny_model):
    root = tmp_path / "store"
    for name in ("a00", "a01", "a02", "a03"):
        shutil.copytree(many_adapters / name, root / name)
    shutil.copytree(qa_store / "qa", root / "qa")
    refs = references(root, tiny_model, tmp_path / "scratch")
    base = str(tiny_model)

    server, port, server_log = start_server(root)
    running = Running(f"http://127.0.0.1:{port}")
    client = running.client
    ledger = Ledger()
    poller = None
    try:
        # Warm-up: every model once, then the memory the server starts the load with.
        for model in ("a00", "a01", "a02", "a03", base, MIX):
            assert (
                running.call(
                    "POST", "/v1/completions", {"model": model, "prompt": "The", "max_tokens": 4, "temperature": 0}
                ).status
                == 200
            )
        assert client.chat.completions.create(
            model="qa", messages=[{"role": "user", "content": QUESTION}], max_tokens=4, temperature=0
        ).choices
        rss_start = rss_mib(server.pid)

        load_ends = time.monotonic() + LOAD_SECONDS

        def loop(body, pause: float = 0.0, cap: int = 2000):
            def run():
                for i in range(cap):  # bounded in count as well as in time
                    if time.monotonic() > load_ends:
                        return
                    body(i)
                    time.sleep(pause)

            return run

        def completion(model, prompt, **fields):
            def send():
                reply = running.call(
                    "POST", "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": TOKENS, **fields}
                )
                text = reply.body["choices"][0]["text"] if reply.status == 200 else None
                return reply.status, reply.body, text

            return send

        # -- good clients
        def greedy_retrained(i):
            prompt = PROMPTS[i % len(PROMPTS)]
            ledger.record("greedy a00", completion("a00", prompt, temperature=0), prompt=prompt)

        def greedy_static(i):
            model, name = [("a01", "a01"), (base, None)][i % 2]
            prompt = PROMPTS[i % len(PROMPTS)]

            def send():
                got = client.completions.create(model=model, prompt=prompt, max_tokens=TOKENS, temperature=0)
                return 200, None, got.choices[0].text

            ledger.record("greedy", send, expected=refs.greedy[name, prompt])
            # Below 1e-3 a temperature samples greedily (issue 23.2): 1e-38 must give the greedy text, not a 500.
            ledger.record(
                "temperature 1e-38", completion(model, prompt, temperature=1e-38), expected=refs.greedy[name, prompt]
            )

        def sampled(i):
            seed = i // 2 if i % 2 == 0 else max(i // 2 - 2, 0)  # every seed is asked twice, apart in time

            def send():
                got = client.completions.create(
                    model="a01", prompt="The cat", max_tokens=TOKENS, n=2, seed=seed, temperature=0.9
                )
                return 200, None, json.dumps([c.text for c in got.choices])

            ledger.record("sampled", send, seed=seed)

        def streamed(i):
            prompt = PROMPTS[i % len(PROMPTS)]

            def send():
                chunks = list(
                    client.completions.create(model="a02", prompt=prompt, max_tokens=TOKENS, temperature=0, stream=True)
                )
                return 200, None, "".join(c.choices[0].text for c in chunks if c.choices)

            ledger.record("stream", send, expected=refs.greedy["a02", prompt])

        def chat(i):
            def send():
                messages = [{"role": "user", "content": QUESTION}]
                if i % 2:
                    chunks = client.chat.completions.create(
                        model="qa", messages=messages, max_tokens=12, temperature=0, stream=True
                    )
                    return 200, None, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                got = client.chat.completions.create(model="qa", messages=messages, max_tokens=12, temperature=0)
                return 200, None, got.choices[0].message.content

            ledger.record("chat", send, expected=refs.chat)

        def mixed(i):
            prompt = PROMPTS[i % len(PROMPTS)]

            def send():
                got = client.completions.create(model=MIX, prompt=prompt, max_tokens=TOKENS, temperature=0)
                return 200, None, got.choices[0].text

            ledger.record("mix", send, expected=refs.mix[prompt])

        def removed(i):
            prompt = PROMPTS[i % len(PROMPTS)]
            ledger.record("a03", completion("a03", prompt, temperature=0), expected=refs.greedy["a03", prompt])

        def models(i):
            def send():
                reply = running.call("GET", "/v1/models")
                return reply.status, reply.body, None

            ledger.record("models", send)

        # -- hostile clients
        def hostile(i):
            name, body, *_ = HOSTILE[i % len(HOSTILE)]
            path = "/v1/chat/completions" if name.startswith("chat") else "/v1/completions"
            ledger.record("hostile", lambda: raw_request(port, path, as_bytes(body)), case=i % len(HOSTILE))
            if i % len(HOSTILE) == 0:
                ledger.record("chunked body over --max-body", lambda: chunked_too_large(port))

        def leaving(i):
            if i % 2:
                ledger.record("left waiting", lambda: leave_waiting(port))
            else:
                ledger.record("left mid-stream", lambda: leave_mid_stream(port))

        slow_limit = READ_TIMEOUT + 20

        def slow_headers(i):
            ledger.record("slow headers", lambda: trickle_headers(port, slow_limit))

        def slow_body(i):
            ledger.record("slow body", lambda: trickle_body(port, slow_limit))

        clients = [
            loop(greedy_retrained),
            loop(greedy_static),
            loop(sampled),
            loop(streamed),
            loop(chat),
            loop(mixed),
            loop(removed, 0.1),
            loop(models, 0.5),
            loop(hostile, 0.05),
            loop(leaving, 1.0),
        ]
        clients += [loop(slow_headers, cap=1)] * 2 + [loop(slow_body, cap=1)] * 2
        threads = [threading.Thread(target=c, daemon=True) for c in clients]
        load_starts = time.monotonic()
        poller = subprocess.Popen(
            [sys.executable, "-c", POLLER, str(port), str(LOAD_SECONDS)], stdout=subprocess.PIPE, text=True
        )
        for t in threads:
            t.start()

        # -- the store changes under the load
        changes: dict[str, tuple[float, float]] = {}
        events = sorted([(at, "retrain", seed) for at, seed in RETRAINS.items()] + [(REMOVE_AT, "remove", None)])
        for number, (at, what, seed) in enumerate(events):
            time.sleep(max(load_starts + at - time.monotonic(), 0))
            began = time.monotonic()
            if what == "retrain":
                add_adapter(root, tiny_model, "a00", seed=seed, overwrite=True)
                changes[f"a00 seed {seed}"] = (began, time.monotonic())
            else:
                AdapterStore(root).remove("a03")
                changes["a03 removed"] = (began, time.monotonic())

        for t in threads:
            t.join(LOAD_SECONDS + slow_limit + 120)
        assert not any(t.is_alive() for t in threads), "a client is still waiting for an answer"
        polls = json.loads(poller.communicate(timeout=60)[0])
        health = [(took, status, at - load_starts) for took, status, at in polls]

        # After the load: no row left generating, a00 at its last version, memory within its bound.
        wait_for(lambda: running.metrics()["gpt2_adapt_running_rows"] == 0, what="no row left running")
        last = running.call(
            "POST", "/v1/completions", {"model": "a00", "prompt": "The cat", "max_tokens": TOKENS, "temperature": 0}
        )
        assert last.status == 200 and last.body["choices"][0]["text"] == refs.versions[-1]["The cat"]
        rss_end = rss_mib(server.pid)

        # The server is done with every request whose client left: its access-log line is written.

        def logged() -> set[int]:  # the client ports of the requests logged
            lines = "\n".join(line for _, line in server_log.lines)
            return {int(p) for p in re.findall(r'127\.0\.0\.1:(\d+) "POST', lines)}

        left = {o.text: o for o in ledger.of("left waiting") if o.error is None}
        deadline = time.monotonic() + 10
        while set(left) - logged() and time.monotonic() < deadline:
            time.sleep(0.2)
        still_open = [left[client_port] for client_port in set(left) - logged()]
        metrics = running.metrics()

        # SIGTERM, with two streams in flight: exit 0 within the grace period.
        streaming = [threading.Event() for _ in range(2)]

        def last_stream(started: threading.Event):
            def send():
                connection, response, first = open_stream(
                    port, {"model": "a01", "prompt": "The", "max_tokens": 30, "temperature": 0}
                )
                started.set()
                try:
                    return response.status, None, (first + response.read()).decode()
                finally:
                    connection.close()

            ledger.record("stream at SIGTERM", send)
            started.set()

        in_flight = [threading.Thread(target=last_stream, args=(e,)) for e in streaming]
        for t in in_flight:
            t.start()
        for e in streaming:
            e.wait(30)
        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        exit_code = server.wait(GRACE + 5)
        stopped_after = time.monotonic() - signalled
        for t in in_flight:
            t.join(30)
    finally:
        if poller is not None and poller.poll() is None:
            poller.kill()
        if server.poll() is None:
            server.kill()
            server.wait(10)
    log = server_log.text()

    # ---------------------------------------------------------------- what held
    summary = {kind: len(ledger.of(kind)) for kind in sorted({o.kind for o in ledger.outcomes})}
    print("requests per kind:", summary)
    latencies = sorted(took for took, *_ in health)
    slow = [f"{1000 * took:.0f} ms at {at:.1f} s" for took, _, at in health if took > HEALTH_LIMIT]
    spread = (
        f"{len(latencies)} polls, median {1000 * latencies[len(latencies) // 2]:.1f} ms, "
        f"p99 {1000 * latencies[int(len(latencies) * 0.99)]:.1f} ms, max {1000 * latencies[-1]:.1f} ms; "
        f"over {1000 * HEALTH_LIMIT:.0f} ms: {', '.join(slow) or 'none'}"
        if latencies
        else "no polls"
    )
    print("/health:", spread)
    print(f"RSS: {rss_start:.0f} MiB after warm-up, {rss_end:.0f} MiB after the load")
    print(f"SIGTERM to exit: {stopped_after:.1f} s")
    print("the load started at", time.strftime("%H:%M:%S", time.gmtime(time.time() - time.monotonic() + load_starts)))
    print(
        "store changes (s into the load):",
        {k: (round(a - load_starts, 1), round(b - load_starts, 1)) for k, (a, b) in changes.items()},
    )

    # Each check below adds what did not hold to `problems`: one run reports all of them.
    problems: list[str] = []

    def expect(kind: str, bad: list, what: str, shown: int = 600) -> None:
        if bad:
            problems.append(f"{kind}: {len(bad)} {what}, the first: {str(bad[0])[:shown]}")

    # Every request was answered.
    expect("all", [o for o in ledger.outcomes if o.error is not None], "requests got no answer")
    expect("all", [summary] if sum(summary.values()) < 300 else [], "too few requests for a load")

    # Every good request got the right answer.
    for kind in ("greedy", "temperature 1e-38", "stream", "chat", "mix"):
        expect(
            kind,
            [o for o in ledger.of(kind) if o.error is None and (o.status != 200 or o.text != o.extra["expected"])],
            "answers differ from toolkit.generate's",
        )
        expect(kind, [summary] if not ledger.of(kind) else [], "requests were sent")
    samples = defaultdict(set)
    for o in ledger.of("sampled"):
        if o.error is None:
            samples[o.extra["seed"]].add(o.text if o.status == 200 else f"status {o.status}")
    expect("sampled", [(s, t) for s, t in samples.items() if len(t) > 1], "seeds gave different texts")
    expect(
        "sampled",
        [] if any(len(set(json.loads(min(t)))) == 2 for t in samples.values() if min(t)[0] == "[") else [samples],
        "seeds gave n=2 different texts (none did)",
    )

    # Greedy on the retrained adapter: the text of a version that was in the store while the request ran.
    edges = [changes[f"a00 seed {seed}"] for seed in RETRAINS.values()]
    windows = [
        (-float("inf") if k == 0 else edges[k - 1][0], float("inf") if k == len(edges) else edges[k][1])
        for k in range(len(refs.versions))
    ]
    served = defaultdict(int)
    wrong = []
    for o in ledger.of("greedy a00"):
        if o.error is not None:
            continue
        possible = {k for k, (start, end) in enumerate(windows) if start <= o.answered and o.sent <= end}
        matches = {k for k in possible if o.status == 200 and refs.versions[k][o.extra["prompt"]] == o.text}
        if not matches:
            wrong.append((o, f"versions live: {sorted(possible)}"))
        for k in matches:
            served[k] += 1
    expect("greedy a00", wrong, "answers are no version's that was in the store during the request")
    expect(
        "greedy a00",
        [dict(served)] if set(served) != set(range(len(refs.versions))) else [],
        "versions were never served",
    )

    # The removed adapter: its text before, 404 after.
    removal = changes["a03 removed"]
    expect(
        "a03",
        [
            o
            for o in ledger.of("a03")
            if o.error is None
            and not (
                (o.status == 200 and o.sent <= removal[1] and o.text == o.extra["expected"])
                or (o.status == 404 and o.answered >= removal[0] and o.body["error"]["code"] == "model_not_found")
            )
        ],
        "answers were neither its text before the removal nor 404 after",
    )
    expect(
        "models",
        [
            o
            for o in ledger.of("models")
            if o.error is None and not (o.status == 200 and base in {m["id"] for m in o.body["data"]})
        ],
        "listings failed",
    )

    # Each hostile request got its status and an OpenAI-style error body saying what was wrong.
    def refused_as_expected(o: Outcome, status: int, code: str | None, param: str | None, words: str) -> bool:
        error = o.body.get("error") if isinstance(o.body, dict) else None
        return (
            o.status == status
            and isinstance(error, dict)
            and set(error) == {"message", "type", "param", "code"}
            and error["type"] == "invalid_request_error"
            and error["code"] == code
            and error["param"] == param
            and words in error["message"]
            and len(error["message"]) < 1000
        )

    for number, (name, _, status, code, param, words) in enumerate(HOSTILE):
        cases = [o for o in ledger.of("hostile") if o.extra["case"] == number and o.error is None]
        expect(
            name,
            [o for o in cases if not refused_as_expected(o, status, code, param, words)],
            f"answers were not {status} with an OpenAI error body",
        )
    chunked = "chunked body over --max-body"
    expect(
        chunked,
        [
            o
            for o in ledger.of(chunked)
            if o.error is None and not (o.status == 413 and o.body["error"]["code"] == "body_too_large")
        ],
        "answers were not 413",
    )
    expect(
        "slow headers",
        [o for o in ledger.of("slow headers") if o.error is None and o.text > READ_TIMEOUT + 10],
        "connections were closed long after the read timeout",
    )
    expect(
        "slow body",
        [
            o
            for o in ledger.of("slow body")
            if o.error is None and not (o.status == 408 and o.body["error"]["type"] == "timeout_error")
        ],
        "answers were not 408",
    )
    expect(
        "left mid-stream",
        [
            o
            for o in ledger.of("left mid-stream")
            if o.error is None and not (o.status == 200 and o.text.startswith("data: "))
        ],
        "streams did not start",
    )
    expect(
        "left waiting",
        still_open,
        "requests whose client left were still open 10 s after the load (no access-log "
        "line: the server was not done with them)",
    )
    expect(
        "left mid-stream",
        [metrics] if not metrics.get('gpt2_adapt_stopped_rows_total{reason="cancelled"}') else [],
        "generations were stopped when their client left (none was)",
    )

    # /health answered every poll, each within 100 ms.
    expect("/health", [] if len(health) > LOAD_SECONDS * 5 else [len(health)], "polls, too few")
    expect("/health", [h for h in health if h[1] != 200], "polls were not 200")
    expect("/health", [spread] if slow else [], f"polls took more than {1000 * HEALTH_LIMIT:.0f} ms")

    # Memory: within the bound of where it started; SIGTERM: exit 0 within the grace period, streams ended whole
    # or (drained) with an error event, then [DONE]; and no bug in the log.
    expect(
        "RSS",
        [(rss_start, rss_end)] if rss_end - rss_start > RSS_BOUND_MIB else [],
        f"MiB grew by more than {RSS_BOUND_MIB}",
    )
    expect(
        "SIGTERM",
        [
            f"exit {exit_code} {stopped_after:.1f} s after SIGTERM; the log since:\n"
            + server_log.text(since=signalled)[-2000:]
        ]
        if exit_code != 0 or stopped_after > GRACE
        else [],
        f"stops were not status 0 within the grace period ({GRACE} s)",
        shown=3000,
    )

    def ended(o) -> bool:
        events = [e.removeprefix("data: ") for e in (o.text or "").split("\n\n") if e]
        if o.status != 200 or len(events) < 2 or events[-1] != "[DONE]":
            return False
        last = json.loads(events[-2])
        return (last.get("choices") or [{}])[0].get("finish_reason") in ("stop", "length") or last.get("error", {}).get(
            "code"
        ) == "shutting_down"

    expect(
        "stream at SIGTERM",
        [o for o in ledger.of("stream at SIGTERM") if o.error is None and not ended(o)],
        "streams were cut short",
    )
    expect("log", [line for line in log.splitlines() if "Traceback" in line or '" 500 ' in line], "lines tell of a bug")
    assert not problems, "\n".join(problems)
