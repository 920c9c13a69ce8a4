"""The store changing under a running server: an adapter added is served at once, one retrained is served
at its new version from the next request on, one removed answers 404; no restart."""

import shutil

from toolkit import AdapterStore

from .servers import Alone, add_adapter, log_lines, served, wait_for


def test_adapters_added_retrained_and_removed_while_the_server_runs(tmp_path, many_adapters, tiny_model):
    root = tmp_path / "live"
    shutil.copytree(many_adapters / "a00", root / "a00")
    with served(store=str(root)) as running:
        ask = lambda model: running.call(
            "POST",
            "/v1/completions",
            {"model": model, "prompt": "The cat", "max_tokens": 12, "temperature": 0},
        )
        first = ask("a00")
        assert first.status == 200
        assert first.body["choices"][0]["text"] == Alone(root, tiny_model)("a00", "The cat", 12)
        assert ask("fresh").status == 404

        add_adapter(root, tiny_model, "fresh", seed=50)  # trained (here: imported) into the store
        added = ask("fresh")
        assert added.status == 200
        assert added.body["choices"][0]["text"] == Alone(root, tiny_model)("fresh", "The cat", 12)
        assert "fresh" in {m["id"] for m in running.call("GET", "/v1/models").body["data"]}

        add_adapter(root, tiny_model, "a00", seed=51, overwrite=True)  # retrained: other weights, same name
        retrained = ask("a00")
        expected = Alone(root, tiny_model)("a00", "The cat", 12)
        assert expected != first.body["choices"][0]["text"]
        assert retrained.body["choices"][0]["text"] == expected

        AdapterStore(root).remove("fresh")
        gone = ask("fresh")
        assert gone.status == 404 and gone.body["error"]["code"] == "model_not_found"
        assert "fresh" not in {m["id"] for m in running.call("GET", "/v1/models").body["data"]}
        # The old version of a00 and the removed adapter are unloaded: one adapter left in memory.
        wait_for(lambda: running.metrics()["gpt2_adapt_loaded_adapters"] == 1, what="stale adapters unloaded")


def test_at_most_max_loaded_adapters_stay_loaded_least_recently_used_first(many_adapters, tiny_model):
    alone = Alone(many_adapters, tiny_model)
    with log_lines("toolkit.serving.registry") as messages, served(store=str(many_adapters), max_loaded=2) as running:
        for name in ("a00", "a01", "a00", "a02", "a03", "a00"):
            reply = running.call(
                "POST", "/v1/completions", {"model": name, "prompt": "The", "max_tokens": 5, "temperature": 0}
            )
            assert reply.body["choices"][0]["text"] == alone(name, "The", 5)
            assert running.metrics()["gpt2_adapt_loaded_adapters"] <= 2
    unloaded = [m.split()[1].split("@")[0] for m in messages if m.startswith("unloaded")]
    # a00 was used again before a02 came: a01 went first; then a00 (older than a02); then a02.
    assert unloaded == ["a01", "a00", "a02"]
