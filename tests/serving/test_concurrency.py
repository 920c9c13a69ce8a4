"""Many clients at once, each on its own adapter (and some on the base): every response is the one its
model gives alone, nothing is lost, and the server generated them in batches of more than one row."""

import threading

from toolkit import AdapterStore

from .servers import Alone, served

PROMPTS = ["The cat", "a dog sees the", "my sister"]


def test_sixteen_clients_on_sixteen_adapters_and_some_on_the_base(many_adapters, tiny_model):
    names = AdapterStore(many_adapters).names()
    assert len(names) == 16
    clients = names + [str(tiny_model)] * 4  # 16 on their own adapter, 4 on the base
    results, failures = {}, []
    start = threading.Barrier(len(clients))

    def client(model: str, number: int, running):
        openai = running.client
        start.wait()
        try:
            for prompt in PROMPTS:
                got = openai.completions.create(model=model, prompt=prompt, max_tokens=12, temperature=0)
                results[number, prompt] = (model, got.choices[0].text, got.usage.completion_tokens)
        except Exception as err:  # noqa: BLE001 - reported below, with the others
            failures.append((model, repr(err)))

    with served(store=str(many_adapters), max_batch=32, max_loaded=16) as running:
        threads = [threading.Thread(target=client, args=(model, i, running)) for i, model in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        metrics = running.metrics()
    assert failures == []
    assert len(results) == len(clients) * len(PROMPTS)  # nothing lost
    alone = Alone(many_adapters, tiny_model)
    for (number, prompt), (model, text, _) in sorted(results.items()):
        assert text == alone(None if model == str(tiny_model) else model, prompt, 12), (model, prompt)
    assert len({text for model, text, _ in results.values()}) > 16  # the adapters' texts differ
    steps, rows = metrics["gpt2_adapt_batch_rows_count"], metrics["gpt2_adapt_batch_rows_sum"]
    alone_steps = metrics['gpt2_adapt_batch_rows_bucket{le="1.0"}']
    assert alone_steps < steps and rows / steps > 2, (steps, rows, alone_steps)
    assert metrics["gpt2_adapt_loaded_adapters"] == 16
