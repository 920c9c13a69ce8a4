"""Benchmark (not a test): each speed change of the training step on its own, before and after, for
BENCHMARKS.md. One LoRA training step (forward, backward, AdamW) of the toolkit's default adapter (r=16 on
c_attn) on the real 124M GPT-2 architecture (random weights), batch 2 x 512 random tokens.

    .venv/bin/python -m benchmarks.changes [--steps 4] [--repeats 3] [--variants NAME ...]

Every run is a fresh process; a run times `--steps` steps after one warm-up step and reports the median
step; a variant's figure is the median over `--repeats` runs. The loss of the last step is printed too: a
speed-up that moves it beyond bf16 rounding would be a bug. About 12 minutes on 2 idle CPU cores.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# name: (precision, loss, base dropout, attention, compile)
VARIANTS = {
    "fp32, model's loss (the toolkit before)": ("fp32", "model", True, "sdpa", False),
    "fp32, chunked head loss": ("fp32", "chunked", True, "sdpa", False),
    "bf16 autocast, model's loss": ("bf16", "model", True, "sdpa", False),
    "bf16 autocast, chunked head loss": ("bf16", "chunked", True, "sdpa", False),
    "bf16, chunked, eager attention (the default before)": ("bf16", "chunked", True, "eager", False),
    "bf16, chunked, eager attention, cheaper dropout masks (default)": ("bf16", "chunked", True, "fast", False),
    "bf16, chunked, base_dropout=false": ("bf16", "chunked", False, "sdpa", False),
    "bf16, chunked, base_dropout=false, eager attention": ("bf16", "chunked", False, "eager", False),
    "bf16, chunked, base_dropout=false, torch.compile": ("bf16", "chunked", False, "sdpa", True),
    "bf16, chunked, torch.compile": ("bf16", "chunked", True, "sdpa", True),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one run of one variant, in a child process
    args = parser.parse_args()
    if args.run:
        print(json.dumps(one_run(VARIANTS[args.run], args.steps)))
        return 0

    import torch

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 124M (random weights), LoRA r=16 "
        f"on c_attn, batch 2 x 512; median of {args.repeats} runs x {args.steps} steps"
    )
    print(f"bf16 GEMM peak: {gemm_peak() / 1e9:,.0f} GFLOP/s (best of square products, this run)")
    print(f"{'variant':65s} {'tokens/s':>9s} {'s/step':>7s} {'peak RSS':>9s} {'loss':>8s}  runs (tokens/s)")
    # Repeats interleave the variants (A, B, A, B, ...) so that a slow spell of a shared machine falls on
    # every variant alike.
    runs = {name: [] for name in args.variants}
    for _ in range(args.repeats):
        for name in args.variants:
            out = subprocess.run(
                [sys.executable, __file__, "--run", name, "--steps", str(args.steps)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for name in args.variants:
        median = sorted(runs[name], key=lambda r: r["seconds"])[len(runs[name]) // 2]
        rates = ", ".join(f"{1024 / r['seconds']:.0f}" for r in runs[name])
        print(
            f"{name:65s} {1024 / median['seconds']:9.1f} {median['seconds']:7.3f} "
            f"{median['peak_rss'] / 2**30:7.2f} GB {median['loss']:8.4f}  {rates}",
            flush=True,
        )
    return 0


def one_run(variant, steps: int) -> dict:
    import warnings

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    from toolkit.hardware import peak_resident_memory
    from toolkit.modeling import dropout as fast
    from toolkit.modeling import head_loss

    warnings.filterwarnings("ignore")
    precision, loss_kind, dropout, attention, compile_ = variant
    torch.manual_seed(0)
    # "fast": the eager attention and GPT-2's dropout modules with the toolkit's cheaper masks
    config = GPT2Config(attn_implementation=fast.register_attention() if attention == "fast" else attention)
    if not dropout:
        config.attn_pdrop = config.resid_pdrop = config.embd_pdrop = 0.0
    model = GPT2LMHeadModel(config)
    if attention == "fast":
        fast.use_fast_dropout(model)
    model.loss_type = "ForCausalLM"
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, lora).train()
    forward = torch.compile(model) if compile_ else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, config.vocab_size, (2, 512), generator=torch.Generator().manual_seed(1))
    head = model.get_output_embeddings()

    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if loss_kind == "model":
                loss = forward(input_ids=ids, labels=ids).loss
            else:
                hidden = forward(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
                loss = head_loss.summed_nll(hidden, head.weight, ids) / ids[:, 1:].numel()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    step()  # warm-up (and compilation)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - started)
    peak = peak_resident_memory()
    return {"seconds": statistics.median(times), "loss": loss, "peak_rss": peak}


def gemm_peak() -> float:
    import torch

    best = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
        for _ in range(4):
            started = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - started))
    return best


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
