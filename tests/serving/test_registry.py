"""The registry of loaded adapters, driven directly with real peft: loading, unloading, replacing and
mixing in random orders always leave a model on which every loaded adapter, and the base, run and give
what each gives alone. (peft keeps naming a deleted adapter "active", and its forward then raises.)"""

import random

import pytest
import torch

from toolkit import AdapterStore
from toolkit.modeling.switching import BASE
from toolkit.serving.catalog import Catalog
from toolkit.serving.engine import forward
from toolkit.serving.registry import NoRoom, Registry
from toolkit.sources.models import model_source
from toolkit.store.loading import load

from .servers import add_adapter

IDS = torch.tensor([[5, 17, 42, 8]])


def alone_logits(store, name):
    model, _ = load(name, store=store)
    with torch.inference_mode():
        return model(input_ids=IDS).logits


@pytest.mark.parametrize("seed", range(3))
def test_any_order_of_loads_unloads_retrains_and_mixes_leaves_a_model_that_runs(tmp_path, tiny_model, seed):
    rng = random.Random(seed)
    root = tmp_path / "store"
    versions = {}
    for i, name in enumerate(("a", "b", "c")):
        add_adapter(root, tiny_model, name, seed=i)
        versions[name] = i
    store = AdapterStore(root)
    model, tokenizer = load(base=str(tiny_model), store=store)
    with torch.inference_mode():
        base = model(input_ids=IDS).logits
    registry = Registry(model, tokenizer, store, model_source(str(tiny_model)), max_loaded=2)
    catalog = Catalog(store, str(tiny_model), 0)
    held: list[str] = []
    references = {}
    loaded_at = {}  # peft name -> the version of its adapter in the store when it was loaded

    def acquire(model):
        try:
            held.append(registry.acquire(catalog.target(model)))
        finally:  # a mix may load its parts and then find no room: they are loaded all the same
            for name in registry.model.peft_config if hasattr(registry.model, "peft_config") else ():
                if "@" in name and name not in loaded_at:  # loaded just now: the store's version of now
                    loaded_at[name] = versions[name.split("@")[0]]

    for step in range(14):
        action = rng.choice(["acquire", "acquire", "release", "retrain", "mix"])
        if action == "acquire":
            try:
                acquire(rng.choice("abc"))
            except NoRoom:
                pass
        elif action == "release" and held:
            registry.release(held.pop(rng.randrange(len(held))))
        elif action == "retrain":
            name = rng.choice("abc")
            versions[name] = 10 * step + 3
            add_adapter(root, tiny_model, name, seed=versions[name], overwrite=True)
        elif action == "mix":
            try:
                acquire("a=0.5,b=0.5")
            except NoRoom:
                pass
        registry.sweep()
        loaded = [name for name in registry.model.peft_config] if hasattr(registry.model, "peft_config") else []
        # Every row routed by name: the base and each loaded adapter in one forward pass.
        names = [BASE, *loaded]
        out = forward(registry.model, names, input_ids=IDS.repeat(len(names), 1)).logits
        torch.testing.assert_close(out[0], base[0])
        for row, peft_name in enumerate(names[1:], start=1):
            if peft_name.startswith("mix-"):
                continue  # checked to run; a mix's values are the mixing tests'
            plain = peft_name.split("@")[0]
            key = (plain, loaded_at[peft_name])
            if key not in references:  # the adapter alone, at that version (re-made from its seed)
                scratch = tmp_path / f"reference-{plain}-{key[1]}"
                add_adapter(scratch, tiny_model, plain, seed=key[1])
                references[key] = alone_logits(scratch, plain)
            torch.testing.assert_close(out[row], references[key][0], atol=1e-5, rtol=1e-5)
