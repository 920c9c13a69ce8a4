"""The serving benchmark's pure decode loop: the server's generation code without the server, on the same
adapters, giving what the served tokens/s are a share of."""

from toolkit import AdapterStore
from toolkit.bench.report import serving_table
from toolkit.bench.serving import REQUESTS_PER_CLIENT, _decode_loop


def test_the_decode_loop_runs_every_row_on_its_own_adapter(many_adapters, tiny_model):
    names = AdapterStore(many_adapters).names()[:4]
    loop = _decode_loop(tiny_model, many_adapters, names, "The cat", 5, "fp32")
    assert loop["rows"] == 4 and loop["tokens_per_second"] > 0
    served = {"tokens_per_second": loop["tokens_per_second"] / 2, "p50": 1.0, "p95": 2.0}
    result = {
        "new_tokens": 5,
        "requests_per_client": REQUESTS_PER_CLIENT,
        "adapters": 4,
        "one_adapter": {4: served},
        "own_adapter": {4: served},
        "one_at_a_time": {4: served},
        "memory": {"per_adapter": 1, "adapter_file": 1},
        "joining": {
            "short_tokens": 1,
            "long_tokens": 4,
            "short_during_long": 1,
            "short_alone": 1,
            "long_with_short": 1,
            "long_alone": 1,
        },
        "decode_loop": loop,
    }
    assert "served: 50% of it" in "\n".join(serving_table(result))
