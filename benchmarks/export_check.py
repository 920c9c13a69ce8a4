"""`gpt2-adapt export` on the 124M GPT-2 architecture with the real GPT-2 tokenizer: every GGUF type and the
ONNX model, each run by its runtime (`--verify`'s figures), and greedy text from llama.cpp against the
toolkit's on WikiText-2 prompts (the real vocabulary and pre-tokenizer at work).

    .venv/bin/python -m benchmarks.export_check

The weights are random (no pretrained GPT-2 offline), the adapter is a random LoRA r=8 on every projection
(peft's init_lora_weights=False: a large update). Prints one line per check; about 5 minutes on 2 cores.
"""

import tempfile
import time
from pathlib import Path

from benchmarks import gpt2_124m

PROMPTS = 4  # WikiText-2 lines used as prompts
NEW_TOKENS = 24


def main() -> None:
    if not gpt2_124m.available():
        return
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

    import toolkit
    from toolkit.exporting import runtimes
    from toolkit.store.importing import import_adapter
    from toolkit.store.store import AdapterStore

    work = Path(tempfile.mkdtemp(prefix="export-check-"))
    base = gpt2_124m.write_model(work)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config.from_pretrained(base)).save_pretrained(base)  # random weights, drawn once
    store = AdapterStore(work / "store")
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=["c_attn", "c_proj", "c_fc"],
        fan_in_fan_out=True,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(work / "random")
    import_adapter(work / "random", store, name="random", base=str(base))

    for tensor_type in ("f32", "f16", "bf16", "q8_0"):
        started = time.perf_counter()
        result = toolkit.export(
            "random", work / tensor_type, tensor_type=tensor_type, merged=True, store=store, verify=True
        )
        sizes = ", ".join(f"{name} {(result.path / name).stat().st_size / 2**20:.0f} MiB" for name in result.files)
        print(f"gguf {tensor_type}: {sizes}; export and verify {time.perf_counter() - started:.0f} s")
        for check in result.checks:
            print(
                f"  {check.file} {check.what}: {check.difference:.2g} of the largest logit "
                f"(tolerance {check.tolerance:g}) {'ok' if check.passed else 'OVER'}"
            )
    started = time.perf_counter()
    result = toolkit.export("random", work / "onnx", format="onnx", store=store, verify=True)
    print(f"onnx: export and verify {time.perf_counter() - started:.0f} s")
    for check in result.checks:
        print(
            f"  {check.file} {check.what}: {check.difference:.2g} of the largest logit (tolerance {check.tolerance:g})"
        )

    lines = [line.strip() for line in gpt2_124m.TEXT.read_text(encoding="utf-8").splitlines() if len(line.split()) > 12]
    prompts = [" ".join(line.split()[:10]) for line in lines[:PROMPTS]]
    model, tokenizer = toolkit.load("random", store=store)
    expected = [
        toolkit.generate(model, tokenizer, prompt, max_new_tokens=NEW_TOKENS, greedy=True)[0] for prompt in prompts
    ]
    folder = work / "f32"
    got = runtimes.llama_greedy(folder / "base.gguf", prompts, NEW_TOKENS, lora=folder / "adapter.gguf")
    same = sum(a == b for a, b in zip(got, expected))
    print(
        f"greedy text, llama.cpp (f32 base + LoRA) vs toolkit, {NEW_TOKENS} tokens after WikiText-2 prompts: "
        f"{same} of {len(prompts)} identical"
    )
    for prompt, a, b in zip(prompts, got, expected):
        if a != b:
            print(f"  differs after {prompt!r}:\n    llama.cpp {a!r}\n    toolkit   {b!r}")


if __name__ == "__main__":
    main()
