"""Benchmark (not a test): how many ATen kernels (each an OpenMP parallel region when it computes) one
LoRA training step of GPT-2's 12 layers runs, for docs/speed.md. The count does not depend on the widths,
so a narrow model (n_embd 64) stands in for the 124M one; the default recipe's step: bf16 autocast, the
chunked loss, the eager attention and the cheaper dropout masks, LoRA r=16 on c_attn, AdamW.

    .venv/bin/python -m benchmarks.step_kernels
"""

import sys
import warnings
from collections import Counter

# Kernels that only describe memory (views, allocations): no parallel region, no barrier.
NO_WORK = {
    "aten::empty",
    "aten::empty_strided",
    "aten::as_strided",
    "aten::view",
    "aten::_unsafe_view",
    "aten::resolve_conj",
    "aten::resize_",
    "aten::detach",
    "aten::alias",
    "aten::expand",
    "aten::transpose",
    "aten::t",
    "aten::permute",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::slice",
    "aten::select",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::lift_fresh",
    "aten::unbind",
    "aten::split",
    "aten::detach_",
    "aten::result_type",
    "aten::to",
}


def main() -> int:
    warnings.filterwarnings("ignore")
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.profiler import profile
    from transformers import GPT2Config, GPT2LMHeadModel

    from toolkit.modeling import dropout, head_loss

    torch.manual_seed(0)
    config = GPT2Config(n_embd=64, n_head=4, attn_implementation=dropout.register_attention())
    model = GPT2LMHeadModel(config)
    dropout.use_fast_dropout(model)
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (2, 64))
    head = model.get_output_embeddings()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
            loss = head_loss.summed_nll(hidden, head.weight, ids) / ids[:, 1:].numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()  # warm-up
    with profile() as trace:
        step()
    events = [e for e in trace.events() if e.name.startswith("aten::")]
    leaves = [e for e in events if not any(c.name.startswith("aten::") for c in e.cpu_children)]
    working = Counter(e.name for e in leaves if e.name not in NO_WORK)
    print(f"one training step: {len(leaves)} ATen kernels, {sum(working.values())} of them computing")
    print("most frequent computing kernels: " + ", ".join(f"{name[6:]} {n}" for name, n in working.most_common(12)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
