"""gpt2-adapt: LoRA adapters for GPT-2-family models, trained from TOML recipes.

The whole path, from a recipe to a served adapter:

    import toolkit
    result = toolkit.train(toolkit.load_recipe("recipes/quickstart.toml"), store="adapters")
    model, tokenizer = toolkit.load("quickstart")          # base + verified adapter, ready for generate()
    toolkit.generate(model, tokenizer, "The", greedy=True)   # also: use, load_adapter, mix, generate_batch
    rows = toolkit.evaluate("quickstart", files=["notes.txt"])
    toolkit.merge("quickstart", "merged/quickstart")
    toolkit.export("quickstart", "export/quickstart")       # GGUF for llama.cpp (or format="onnx")
    toolkit.serve(store="adapters", port=8000)              # every adapter behind an OpenAI-compatible API
    store = toolkit.AdapterStore("adapters")                 # names(), info(name), path(name), remove(name)
"""

__version__ = "0.3.0"

# The public API: name -> the module that defines it. Imported lazily, so that `gpt2-adapt --help` and
# `import toolkit` do not pay for importing torch.
_WHERE = {
    "AdapterStore": "store.store",
    "EvalResult": "records",
    "GenerationSettings": "generation.settings",
    "Recipe": "config.recipe",
    "ServerSettings": "serving.settings",
    "ToolkitError": "errors",
    "TrainingMetrics": "records",
    "create_app": "serving.app",
    "evaluate": "evaluation.evaluate",
    "export": "exporting.export",
    "generate": "generation.generate",
    "generate_batch": "generation.generate",
    "load": "store.loading",
    "load_adapter": "store.loading",
    "load_recipe": "config.recipe",
    "merge": "generation.merging",
    "mix": "modeling.mixing",
    "serve": "serving.server",
    "train": "training.train",
    "use": "modeling.switching",
}
__all__ = sorted(_WHERE)  # noqa: PLE0605 - the public names are the keys above


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
