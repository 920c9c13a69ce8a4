"""gpt2-adapt: LoRA adapters for GPT-2-family models, trained from TOML recipes.

    import toolkit
    model, tokenizer = toolkit.load("wikitext103")   # base + verified adapter, ready for generate()
    store = toolkit.AdapterStore("adapters")          # names(), info(name), path(name), remove(name)
    toolkit.generate(model, tokenizer, "The")         # also: use, load_adapter, mix, generate_batch, merge
"""

__version__ = "0.1.0"
__all__ = [
    "AdapterStore", "GenerationSettings", "ToolkitError", "generate", "generate_batch", "load", "load_adapter",
    "merge", "mix", "use",
]

# Lazy, so that `gpt2-adapt --help` and `import toolkit` do not pay for importing torch.
_WHERE = {
    "load": "loading",
    "AdapterStore": "store",
    "ToolkitError": "errors",
    "GenerationSettings": "decoding",
    "generate": "generation",
    "generate_batch": "generation",
    "use": "generation",
    "load_adapter": "generation",
    "mix": "mixing",
    "merge": "merging",
}


def __getattr__(name):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
