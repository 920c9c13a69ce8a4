"""Bad input: each case gets an OpenAI-style error body with the right status, names what is wrong, and
the server goes on serving."""

import shutil

import pytest

from .servers import served

GOOD = {"model": "a00", "prompt": "The cat", "max_tokens": 3, "temperature": 0}

# (name, body (a dict merged into GOOD; None values removed) or raw bytes, status, type, param, code,
#  words in the message)
CASES = [
    ("malformed JSON", b'{"model": "a00", "prompt": ', 400, "invalid_request_error", None, None, "not valid JSON"),
    (
        "max_tokens of the wrong type",
        {"max_tokens": "many"},
        400,
        "invalid_request_error",
        "max_tokens",
        None,
        "integer",
    ),
    ("a number as a string", {"max_tokens": "5"}, 400, "invalid_request_error", "max_tokens", None, "integer"),
    (
        "temperature out of range",
        {"temperature": 3},
        400,
        "invalid_request_error",
        "temperature",
        None,
        "less than or equal to 2",
    ),
    ("n of zero", {"n": 0}, 400, "invalid_request_error", "n", None, "greater than or equal to 1"),
    ("n too large", {"n": 100}, 400, "invalid_request_error", "n", None, "less than or equal to 16"),
    (
        "max_tokens negative",
        {"max_tokens": -1},
        400,
        "invalid_request_error",
        "max_tokens",
        None,
        "greater than or equal to 0",
    ),
    ("max_tokens 0 without echo", {"max_tokens": 0}, 400, "invalid_request_error", "max_tokens", None, "with echo"),
    ("a misspelt field", {"max_token": 5}, 400, "invalid_request_error", "max_token", None, "not a field"),
    ("no model", {"model": None}, 400, "invalid_request_error", "model", None, "required"),
    ("no prompt", {"prompt": None}, 400, "invalid_request_error", "prompt", None, "required"),
    ("a number as the prompt", {"prompt": 5}, 400, "invalid_request_error", "prompt", None, "list of token ids"),
    ("token ids outside the vocabulary", {"prompt": [1, 99999]}, 400, "invalid_request_error", "prompt", None, "99999"),
    ("an unknown model", {"model": "ghost"}, 404, "invalid_request_error", "model", "model_not_found", "a00, a01"),
    (
        "a path as the model",
        {"model": "../a00"},
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
        "no model named",
    ),
    (
        "prompt and max_tokens beyond the context",
        {"prompt": "the cat " * 20, "max_tokens": 40},
        400,
        "invalid_request_error",
        "max_tokens",
        None,
        "context of 64",
    ),
    (
        "a mix weight that is not a number",
        {"model": "a00=lots,a01=0.5"},
        400,
        "invalid_request_error",
        "model",
        None,
        "not a finite number",
    ),
    (
        "a mix of weights summing to zero",
        {"model": "a00=1,a01=-1"},
        400,
        "invalid_request_error",
        "model",
        None,
        "sum to zero",
    ),
    (
        "a mix naming a missing adapter",
        {"model": "a00=0.5,ghost=0.5"},
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
        "ghost",
    ),
    (
        "an unsupported OpenAI field",
        {"presence_penalty": 1.0},
        400,
        "invalid_request_error",
        "presence_penalty",
        None,
        "not supported",
    ),
    (
        "too many top logprobs",
        {"logprobs": 50},
        400,
        "invalid_request_error",
        "logprobs",
        None,
        "less than or equal to 20",
    ),
    (
        "five stop sequences",
        {"stop": ["a", "b", "c", "d", "e"]},
        400,
        "invalid_request_error",
        "stop",
        None,
        "at most 4",
    ),
    (
        "more rows than the queue holds",
        {"prompt": ["a"] * 5, "n": 4},
        400,
        "invalid_request_error",
        "n",
        None,
        "20 rows",
    ),
    ("a seed beyond 2**64 - 1", {"seed": 2**64}, 400, "invalid_request_error", "seed", None, "less than or equal to"),
    (
        "a seed below -2**63",
        {"seed": -(2**63) - 1},
        400,
        "invalid_request_error",
        "seed",
        None,
        "greater than or equal to",
    ),
    (
        "a lone surrogate in the prompt",
        b'{"model": "a00", "prompt": "The \\ud800 cat", "max_tokens": 3}',
        400,
        "invalid_request_error",
        "prompt",
        None,
        "lone surrogate",
    ),
    (
        "a lone surrogate in a stop sequence",
        {"stop": "\ud800"},
        400,
        "invalid_request_error",
        "stop",
        None,
        "lone surrogate",
    ),
    (
        "a mix weight of 1e30",
        {"model": "a00=1e30,a01=1e30", "temperature": 1.0},
        400,
        "invalid_request_error",
        "model",
        None,
        "beyond +-100",
    ),
    (
        "a mix of 17 adapters",
        {"model": ",".join(["a00"] * 17)},
        400,
        "invalid_request_error",
        "model",
        None,
        "at most 16",
    ),
    (
        "a model name of 3,000 characters",
        {"model": "m" * 3000},
        400,
        "invalid_request_error",
        "model",
        None,
        "at most 2048 characters",
    ),
    (
        "an unknown long model name, echoed cut short",
        {"model": "m" * 2000},
        404,
        "invalid_request_error",
        "model",
        "model_not_found",
        "(2000 characters)",
    ),
    (
        "a body over --max-body",
        b'{"model": "a00", "prompt": "' + b"x" * (1 << 20) + b'"}',
        413,
        "invalid_request_error",
        None,
        "body_too_large",
        "at most 1048576",
    ),
    ("100,000 prompts", {"prompt": ["a"] * 100_000}, 400, "invalid_request_error", "n", None, "100000 prompts"),
    (
        "a prompt of more characters than the context can hold",
        {"prompt": "x" * 100_000},
        400,
        "invalid_request_error",
        "max_tokens",
        None,
        "100000 characters",
    ),
    (
        "an adapter trained on another base",
        {"model": "other"},
        422,
        "invalid_request_error",
        "model",
        "adapter_refused",
        "other weights",
    ),
    ("a damaged adapter", {"model": "damaged"}, 422, "invalid_request_error", "model", "adapter_refused", "modified"),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, many_adapters, trained_adapters):
    root = tmp_path_factory.mktemp("bad") / "store"
    for name in ("a00", "a01", "a02"):
        shutil.copytree(many_adapters / name, root / name)
    shutil.copytree(trained_adapters / "elsewhere", root / "other")
    (root / "other" / "manifest.json").write_text(
        (root / "other" / "manifest.json").read_text().replace('"name": "elsewhere"', '"name": "other"')
    )
    shutil.copytree(many_adapters / "a02", root / "damaged")
    manifest = root / "damaged" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"name": "a02"', '"name": "damaged"'))
    weights = root / "damaged" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of a tensor changed: the same size, another sha256
    weights.write_bytes(bytes(data))
    with served(store=str(root), max_queue=16) as running:
        yield running


@pytest.mark.parametrize("name, body, status, kind, param, code, words", CASES, ids=[c[0] for c in CASES])
def test_each_bad_request_gets_its_status_and_an_openai_error_body(bad, name, body, status, kind, param, code, words):
    if isinstance(body, bytes):
        reply = bad.call("POST", "/v1/completions", raw=body)
    else:
        request = {k: v for k, v in (GOOD | body).items() if v is not None}
        reply = bad.call("POST", "/v1/completions", request)
    assert reply.status == status, reply.body
    assert set(reply.body) == {"error"}
    error = reply.body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (kind, param, code)
    assert words in error["message"]
    assert len(error["message"]) < 600  # whatever was sent, the message quotes it cut short
    assert "strict=False" not in error["message"]  # a Python argument, which no client can pass
    # ... and the server goes on serving.
    assert bad.call("POST", "/v1/completions", GOOD).status == 200


def test_routes_and_methods_that_do_not_exist_answer_in_the_same_shape(bad):
    missing = bad.call("GET", "/v1/nothing")
    assert missing.status == 404 and missing.body["error"]["type"] == "invalid_request_error"
    wrong = bad.call("GET", "/v1/completions")
    assert wrong.status == 405 and set(wrong.body["error"]) == {"message", "type", "param", "code"}


def test_chat_says_the_adapter_was_trained_on_plain_text(bad):
    reply = bad.call("POST", "/v1/chat/completions", {"model": "a00", "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 400
    assert reply.body["error"]["param"] == "messages"
    assert "adapter 'a00' was trained on plain text" in reply.body["error"]["message"]
    assert (
        bad.call("POST", "/v1/chat/completions", {"model": "a00", "messages": []}).body["error"]["param"] == "messages"
    )
    assert (
        bad.call(
            "POST", "/v1/chat/completions", {"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}
        ).status
        == 404
    )


def test_an_api_key_is_required_on_every_route_but_health(many_adapters):
    with served(store=str(many_adapters), api_key="sesame", max_loaded=2) as running:
        for path in ("/v1/models", "/metrics"):
            missing = running.call("GET", path, key=None)
            assert missing.status == 401 and missing.body["error"]["code"] == "invalid_api_key", path
            assert missing.headers["www-authenticate"] == "Bearer"
            wrong = running.call("GET", path, key="open")
            assert wrong.status == 401 and "wrong" in wrong.body["error"]["message"]
            assert running.call("GET", path).status == 200
        assert running.call("POST", "/v1/completions", GOOD, key=None).status == 401
        assert running.call("POST", "/v1/completions", GOOD).status == 200
        assert running.call("GET", "/health", key=None).status == 200
        assert running.client.completions.create(**GOOD).choices[0].text
