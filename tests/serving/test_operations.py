"""Overload and interruptions: a flood gets 429 with Retry-After, a request past the timeout is stopped,
a killed client stops its own generation only, and SIGTERM lets the requests in flight finish."""

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from .servers import serve_process, served, wait_for

pytestmark = pytest.mark.slow  # real processes, and generations long enough to interrupt


def long_request(model: str, max_tokens: int, **extra) -> dict:
    return {"model": model, "prompt": "The", "max_tokens": max_tokens, "temperature": 0, **extra}


def test_a_flood_gets_429_with_retry_after_and_the_server_goes_on(long_store):
    with served(store=str(long_store), max_batch=1, max_queue=2) as running:
        replies = []
        start = threading.Barrier(12)

        def client():
            start.wait()
            replies.append(running.call("POST", "/v1/completions", long_request("l0", 100)))

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        statuses = sorted(r.status for r in replies)
        assert len(replies) == 12 and set(statuses) == {200, 429}, statuses
        for reply in replies:
            if reply.status == 429:
                assert reply.headers["retry-after"] == "1"
                assert reply.body["error"]["code"] == "queue_full" and reply.body["error"]["type"] == "rate_limit_error"
            else:
                assert reply.body["usage"]["completion_tokens"] == 100
        assert running.call("POST", "/v1/completions", long_request("l0", 5)).status == 200


def test_a_request_past_the_timeout_is_stopped(long_store):
    with served(store=str(long_store), timeout=0.3) as running:
        reply = running.call("POST", "/v1/completions", long_request("l0", 1000))
        assert reply.status == 408
        assert reply.body["error"]["code"] == "timeout" and "0.3 s" in reply.body["error"]["message"]
        metrics = running.metrics()
        assert metrics['gpt2_adapt_stopped_rows_total{reason="timeout"}'] == 1
        assert metrics['gpt2_adapt_generated_tokens_total{model="l0"}'] < 1000
        assert running.call("POST", "/v1/completions", long_request("l0", 5)).status == 200


CLIENT = """
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
for chunk in client.completions.create(model="l0", prompt="The", max_tokens=1000, temperature=0, stream=True):
    print(chunk.choices[0].text.replace("\\n", " "), flush=True)
"""


def test_a_killed_client_stops_its_own_generation_only(long_store, long_model):
    with served(store=str(long_store)) as running:
        other = {}
        client = subprocess.Popen([sys.executable, "-c", CLIENT, running.url], stdout=subprocess.PIPE, text=True)
        try:
            assert client.stdout.readline()  # its stream has started
            worker = threading.Thread(
                target=lambda: other.update(reply=running.call("POST", "/v1/completions", long_request("l1", 100)))
            )
            worker.start()
            client.kill()
            client.wait(10)
        finally:
            if client.poll() is None:
                client.kill()
        metrics = wait_for(
            lambda: (m := running.metrics()).get('gpt2_adapt_stopped_rows_total{reason="cancelled"}') == 1 and m,
            what="the killed client's generation stopped",
        )
        assert metrics['gpt2_adapt_generated_tokens_total{model="l0"}'] < 1000
        worker.join(60)
        assert other["reply"].status == 200 and other["reply"].body["usage"]["completion_tokens"] == 100
        wait_for(lambda: running.metrics()["gpt2_adapt_running_rows"] == 0, what="no row left running")


def test_sigterm_finishes_the_requests_in_flight_then_exits_0(long_store, long_model):
    with serve_process(long_store, "--grace", "30") as (server, running):
        started = [threading.Event() for _ in range(3)]
        finished = {}

        def client(i: int, model: str):
            chunks = running.client.completions.create(
                **long_request(model, 200), stream=True, stream_options={"include_usage": True}
            )
            pieces = []
            for chunk in chunks:
                started[i].set()
                pieces.append(chunk)
            finished[i] = pieces

        threads = [threading.Thread(target=client, args=(i, m)) for i, m in enumerate(["l0", "l1", str(long_model)])]
        for t in threads:
            t.start()
        for event in started:
            assert event.wait(60)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(OSError):  # no longer accepting
            running.call("GET", "/health", timeout=2)
        for t in threads:
            t.join(60)
        assert server.wait(60) == 0
    log = server.stderr.read()
    for i in range(3):
        chunks = finished[i]
        assert chunks[-1].usage.completion_tokens == 200, log
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert log.count('"POST /v1/completions" 200') == 3, log
    assert "Traceback" not in log


def test_a_request_arriving_mid_generation_joins_without_waiting_for_it(long_store):
    """Continuous batching: a short request sent while a long one streams joins it in the batch."""
    with served(store=str(long_store)) as running:
        stream = running.client.completions.create(**long_request("l0", 900), stream=True)
        chunks = [next(stream)]
        short = running.call("POST", "/v1/completions", long_request("l1", 5))
        assert short.status == 200 and short.body["usage"]["completion_tokens"] == 5
        chunks += list(stream)
        finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        assert len(finished) == 1 and finished[0].choices[0].finish_reason == "length"
        # The short one did not wait for the long one: some steps advanced both rows.
        metrics = running.metrics()
        assert metrics['gpt2_adapt_generated_tokens_total{model="l0"}'] == 900
        assert metrics['gpt2_adapt_batch_rows_bucket{le="2.0"}'] > metrics['gpt2_adapt_batch_rows_bucket{le="1.0"}']


def test_sigterm_with_a_short_grace_answers_every_request_in_the_documented_shape(long_store):
    """What the grace period cannot finish is ended before uvicorn closes the connections: a request with
    no first token yet gets the JSON 503 `shutting_down`; a running stream an error event, then [DONE]."""
    import urllib.request

    with serve_process(long_store, "--grace", "1", "--max-batch", "1") as (server, running):
        streamed, queued = [], {}
        first = threading.Event()

        def stream():
            request = urllib.request.Request(
                running.url + "/v1/completions",
                method="POST",
                data=json.dumps(long_request("l0", 1000, stream=True)).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                for line in response:
                    if line.strip():
                        streamed.append(line.decode().strip())
                        first.set()

        streamer = threading.Thread(target=stream)
        streamer.start()
        assert first.wait(60)
        waiter = threading.Thread(
            target=lambda: queued.update(
                reply=running.call(  # no room in the batch: it waits
                    "POST", "/v1/completions", long_request("l1", 1000)
                )
            )
        )
        waiter.start()
        wait_for(lambda: running.metrics()["gpt2_adapt_queue_rows"] == 1, what="the second request queued")
        server.send_signal(signal.SIGTERM)
        streamer.join(30)
        waiter.join(30)
        assert server.wait(30) == 0
    log = server.stderr.read()
    reply = queued["reply"]
    assert reply.status == 503 and reply.body["error"]["code"] == "shutting_down", (reply, log)
    assert streamed[-1] == "data: [DONE]", streamed[-3:]
    error = json.loads(streamed[-2].removeprefix("data: "))
    assert error["error"]["code"] == "shutting_down", streamed[-3:]
    assert "Traceback" not in log, log
