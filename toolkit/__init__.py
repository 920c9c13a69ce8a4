"""gpt2-adapt: LoRA adapters for GPT-2-family models, trained from TOML recipes.

    import toolkit
    model, tokenizer = toolkit.load("wikitext103")   # base + verified adapter, ready for generate()
    store = toolkit.AdapterStore("adapters")          # names(), info(name), path(name), remove(name)
"""

__version__ = "0.1.0"
__all__ = ["AdapterStore", "ToolkitError", "load"]


def __getattr__(name):
    # Lazy, so that `gpt2-adapt --help` and `import toolkit` do not pay for importing torch.
    if name == "load":
        from .loading import load

        return load
    if name == "AdapterStore":
        from .store import AdapterStore

        return AdapterStore
    if name == "ToolkitError":
        from .errors import ToolkitError

        return ToolkitError
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
