"""What the benchmarks here run on: the real 124M GPT-2 architecture (its config; each benchmark draws the
weights) with the real GPT-2 tokenizer, and WikiText-2 validation, both read from ../shared/data and never
copied into the repository (no pretrained GPT-2 can be had offline; the cost is the architecture's)."""

from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
VOCAB = SHARED / "gpt2-tokenizer" / "vocab.json"
TEXT = SHARED / "wikitext-2" / "valid.txt"


def available() -> bool:
    """Whether this machine has the shared data; says so where it does not."""
    if VOCAB.is_file() and TEXT.is_file():
        return True
    print(f"skipped: {SHARED} (WikiText-2 and the GPT-2 tokenizer) is not on this machine")
    return False


def write_model(folder) -> Path:
    """A model folder under `folder` holding GPT2Config() and the real tokenizer, no weights."""
    from transformers import GPT2Config, GPT2TokenizerFast

    model = Path(folder) / "gpt2-124m"
    GPT2Config().save_pretrained(model)
    tokenizer = GPT2TokenizerFast(vocab=str(VOCAB), merges=str(VOCAB.with_name("merges.txt")))
    tokenizer.model_max_length = 1024  # built locally it would claim 1e30
    tokenizer.save_pretrained(model)
    return model
