"""Benchmark: greedy tokens/s of the base, an unmerged adapter and the merged model, and how long switching
to a loaded adapter and loading one from disk take, on the real 124M GPT-2 architecture.

    .venv/bin/python tests/bench_generation.py [--new-tokens 64] [--repeats 3]

Not a test (pytest collects test_*.py only). The weights are random (no pretrained GPT-2 can be had
offline) but have the real shapes and cost; the tokenizer is the real one from ../shared/data, and the
benchmark skips, saying so, where that folder is absent. Two LoRA adapters (r=8 on c_attn, random A and B)
are written by plain peft and brought into a temporary store with `gpt2-adapt adapters import`'s code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TOKENIZER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "gpt2-tokenizer"
PROMPT = "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure in"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per model (median reported)")
    args = parser.parse_args()
    if not (TOKENIZER / "vocab.json").is_file():
        print(f"skipped: the GPT-2 tokenizer is not at {TOKENIZER} (../shared/data is absent here)")
        return 0
    os.environ["HF_HUB_OFFLINE"] = "1"
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        os.environ["GPT2_ADAPT_CACHE"] = str(Path(tmp) / "cache")
        run(Path(tmp), args.new_tokens, args.repeats)
    return 0


def run(tmp: Path, new_tokens: int, repeats: int) -> None:
    import torch

    import toolkit
    from toolkit.importing import import_adapter

    torch.manual_seed(0)
    base_dir = write_base(tmp / "gpt2-124m")
    store = toolkit.AdapterStore(tmp / "store")
    for name, seed in (("bench-a", 1), ("bench-b", 2)):
        import_adapter(write_adapter(base_dir, tmp / name, seed), store, name=name, base=str(base_dir))
    print(f"GPT-2 124M architecture (random weights), torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"greedy, {new_tokens} new tokens after a {len(PROMPT.split())}-word prompt, median of {repeats}")

    base, tokenizer = toolkit.load(base=str(base_dir))
    report("base", tokens_per_second(base, tokenizer, new_tokens, repeats))
    del base
    unmerged, _ = toolkit.load(["bench-a", "bench-b"], store=store)
    report("unmerged adapter (bench-a)", tokens_per_second(unmerged, tokenizer, new_tokens, repeats))

    swaps = []
    for i in range(100):
        started = time.perf_counter()
        toolkit.use(unmerged, "bench-b" if i % 2 == 0 else "bench-a")
        swaps.append(time.perf_counter() - started)
    print(f"{'swap to a loaded adapter':32s} {statistics.median(swaps) * 1e3:8.3f} ms median over 100 "
          f"(max {max(swaps) * 1e3:.3f} ms)")
    loads = []
    for _ in range(5):
        unmerged.delete_adapter("bench-b")
        started = time.perf_counter()
        toolkit.load_adapter(unmerged, tokenizer, "bench-b", store=store)  # verified against the base, then loaded
        loads.append(time.perf_counter() - started)
    print(f"{'load an adapter from disk':32s} {statistics.median(loads) * 1e3:8.1f} ms median over 5 "
          "(manifest, file sha256s and tokenizer checked; base fingerprint cached)")
    del unmerged

    merged_dir = toolkit.merge("bench-a", tmp / "merged", store=store).path
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    report("merged (plain transformers)", tokens_per_second(merged, tokenizer, new_tokens, repeats))


def write_base(folder: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast(vocab=str(TOKENIZER / "vocab.json"), merges=str(TOKENIZER / "merges.txt"))
    tokenizer.model_max_length = 1024  # built locally it would claim 1e30
    GPT2LMHeadModel(GPT2Config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_adapter(base_dir: Path, folder: Path, seed: int) -> Path:
    """A LoRA r=8 on c_attn saved by peft, with random A and B so that it changes the output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False,
                        task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config).save_pretrained(folder)
    return folder


def tokens_per_second(model, tokenizer, new_tokens: int, repeats: int) -> float:
    """Greedy generation with exactly `new_tokens` new tokens (EOS not allowed to stop it early)."""
    import torch

    inputs = tokenizer(PROMPT, return_tensors="pt")
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "pad_token_id": tokenizer.eos_token_id}
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            output = model.generate(**inputs, **kwargs)
            times.append(time.perf_counter() - started)
    assert output.shape[1] - inputs["input_ids"].shape[1] == new_tokens
    return new_tokens / statistics.median(times)


def report(label: str, rate: float) -> None:
    print(f"{label:32s} {rate:8.1f} new tokens/s")


if __name__ == "__main__":
    sys.exit(main())
