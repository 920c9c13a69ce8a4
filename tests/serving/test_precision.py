"""`serve --precision bf16`: greedy output stays `toolkit.generate`'s at that precision, for the base,
adapters and a mix in one batch."""

import threading

import pytest

from .servers import served

pytestmark = pytest.mark.slow  # a real server


def test_bf16_serving_equals_generate_at_bf16(many_adapters, tiny_model):
    import toolkit

    models = ["a00", "a01", "a00=0.5,a01=0.5", str(tiny_model)]
    model, tokenizer = toolkit.load(["a00", "a01"], store=many_adapters, precision="bf16")
    toolkit.mix(model, "a00=0.5,a01=0.5")
    expected = {}
    for name in models:
        adapter = None if name == str(tiny_model) else name if "=" not in name else toolkit.mix(model, name)
        toolkit.use(model, adapter)
        expected[name] = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=10, greedy=True)[0]
    assert len(set(expected.values())) == len(models)  # four different models
    with served(store=str(many_adapters), precision="bf16") as running:
        replies = {}
        threads = [
            threading.Thread(
                target=lambda m=m: replies.update(
                    {
                        m: running.call(
                            "POST",
                            "/v1/completions",
                            {"model": m, "prompt": "The cat", "max_tokens": 10, "temperature": 0},
                        )
                    }
                )
            )
            for m in models
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert {m: r.body["choices"][0]["text"] for m, r in replies.items()} == expected
