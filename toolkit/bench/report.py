"""The benchmark's results as one table."""

from __future__ import annotations

PARTS = ("training", "memory", "eval", "generation", "data", "serving")
LABELS = {
    "toolkit": "gpt2-adapt default recipe",
    "toolkit-nodropout": "gpt2-adapt, training.base_dropout = false",
    "toolkit-fp32": "gpt2-adapt, fp32 (training.precision = fp32)",
    "toolkit-int8": "gpt2-adapt, int8 base, fp32",
    "toolkit-int8-checkpointing": "gpt2-adapt, int8 base + gradient checkpointing",
    "toolkit-nf4": "gpt2-adapt, nf4 base, fp32",
}
BUSY = "-busy"  # a case's name with this suffix: the same case, run while another program keeps one core busy
LABELS |= {name + BUSY: f"{label}, one core busy" for name, label in LABELS.items()}
# plan's estimate for each base precision, and the run measured at it
PLAN_ROWS = {"fp32": "toolkit-fp32", "bf16": "toolkit", "int8": "toolkit-int8", "nf4": "toolkit-nf4"}
LORA_FLOPS_PER_PARAMETER = 4  # forward 2 + backward to the activations 2; the frozen base has no weight gradients


def table(results: dict, labels: dict[str, str] = LABELS) -> str:
    """The results as text; `labels` names each training row (other pipelines' rows bring their own)."""
    s, machine = results["setup"], results["machine"]
    peak = machine["gemm_peak_flops"]["bf16"]
    out = [
        describe_machine(machine),
        f"model: the architecture of {s['model']} (random weights); batch {s['batch_size']} x {s['block_size']} tokens",
    ]
    training = results.get("training", {})
    if training:
        single = " (the fp32, int8 and nf4 rows: 1 run)" if "toolkit-fp32" in training else ""
        out += [
            "",
            f"Training: {s['steps']} timed steps after a warm-up step; median of {_runs(s['repeats'])}{single}",
            (
                f"{'':50s} {'precision':>9s} {'useful tok/s':>12s} {'% bf16 peak':>11s} {'peak memory':>11s} "
                f"{'(training)':>10s}"
            ),
        ]
        for name, r in training.items():
            # A full fine-tune's FLOPs are not LoRA's 4 per parameter: no share for it.
            share = "" if r.get("full_fine_tune") else f"{100 * flops(r) / peak:10.0f}%"
            out.append(
                f"{labels[name]:50s} {r['precision']:>9s} {r['tokens_per_second']:12,.1f} {share:>11s} "
                f"{r['peak_memory'] / 2**30:7.2f} GiB {r['training_memory'] / 2**30:6.2f} GiB"
            )
        out.append(
            f"  peak memory: the process's peak {'allocated on the GPU' if machine['device'] == 'cuda' else 'RSS'}; "
            "(training): less what the process held before loading anything"
        )
        busy = [
            f"{labels[n.removesuffix(BUSY)].split(':')[0]} on {r['threads']}"
            for n, r in training.items()
            if n.endswith(BUSY)
        ]
        if busy:
            out.append(
                "  one core busy: another program (a bare loop) kept one core busy during the run; threads at the "
                f"end: {', '.join(busy)}"
            )
    if results.get("plan"):
        out += ["", "gpt2-adapt plan's memory estimate against the measured training memory:"]
        for precision, name in PLAN_ROWS.items():
            if name in training and (precision != "bf16" or training[name]["precision"] == "bf16"):
                measured = training[name]["training_memory"]
                estimate = results["plan"][precision]
                out.append(
                    f"  {precision:5s} estimate {estimate / 2**30:5.2f} GiB, measured {measured / 2**30:5.2f} GiB "
                    f"({100 * (estimate / measured - 1):+.0f}%)"
                )
    if results.get("eval"):
        out += ["", f"Evaluation (`gpt2-adapt eval`, disjoint windows of {s['block_size']}):"]
        out += [
            f"  {e['precision']:5s} {e['tokens_per_second']:10,.1f} tokens/s over {e['tokens']:,} tokens"
            for e in results["eval"]
        ]
    if results.get("generation"):
        g = results["generation"]
        out += [
            "",
            f"Generation (greedy, {s['new_tokens']} new tokens, median of {_runs(s['repeats'])}):",
            f"  base {g['base']:.1f}, unmerged adapter {g['unmerged']:.1f}, merged {g['merged']:.1f} new tokens/s",
            (
                f"  switch to a loaded adapter {1e3 * g['switch_seconds']:.2f} ms; "
                f"load and verify one from the store {1e3 * g['load_seconds']:.0f} ms"
            ),
        ]
        if "llama_cpp" in g:  # the same generation in llama.cpp, on the adapter exported as GGUF
            out += [
                f"  llama.cpp, {tensor_type} GGUF: base + LoRA {r['unmerged']:.1f}, merged {r['merged']:.1f} "
                "new tokens/s"
                for tensor_type, r in (g["llama_cpp"] or {}).items()
            ]
            if g["llama_cpp"] is None:
                out.append("  llama.cpp: not installed here (pip install 'gpt2-adapt[export]')")
    if results.get("data"):
        d = results["data"]
        out += [
            "",
            (
                f"Data preparation ({d['tokens']:,} tokens): first run {d['first_seconds']:.2f} s "
                f"({d['tokens'] / d['first_seconds']:,.0f} tokens/s), cached {d['cached_seconds']:.3f} s"
            ),
        ]
    if results.get("serving"):
        out += ["", *serving_table(results["serving"])]
    return "\n".join(out)


SERVING_COLUMNS = {
    "one_adapter": "(a) all on one adapter",
    "own_adapter": "(b) each on its own adapter",
    "one_at_a_time": "(c) one request at a time",
}


def serving_table(r: dict) -> list[str]:
    out = [
        (
            f"Serving (`gpt2-adapt serve`, greedy, {r['new_tokens']} new tokens per request, "
            f"{r['requests_per_client']} requests per client, {r['adapters']} adapters loaded):"
        ),
        f"{'clients':>8s}" + "".join(f"  {title:>28s}" for title in SERVING_COLUMNS.values()),
        f"{'':>8s}" + f"  {'tokens/s   p50 s   p95 s':>28s}" * len(SERVING_COLUMNS),
    ]
    for clients in r["one_adapter"]:
        cells = [r[key][clients] for key in SERVING_COLUMNS]
        out.append(
            f"{clients:>8}"
            + "".join(f"  {c['tokens_per_second']:12,.1f} {c['p50']:7.2f} {c['p95']:7.2f}" for c in cells)
        )
    m, j = r["memory"], r["joining"]
    out += [
        (
            f"  memory per loaded adapter: {m['per_adapter'] / 2**20:.2f} MiB of resident memory "
            f"(its weights file: {m['adapter_file'] / 2**20:.2f} MiB)"
        ),
        (
            f"  a {j['short_tokens']}-token request sent while a {j['long_tokens']}-token one generates: "
            f"{j['short_during_long']:.2f} s (alone {j['short_alone']:.2f} s); "
            f"the long one {j['long_with_short']:.2f} s (alone {j['long_alone']:.2f} s)"
        ),
    ]
    if "decode_loop" in r:
        loop, served = r["decode_loop"], r["own_adapter"][max(r["own_adapter"])]
        out.append(
            f"  the pure decode loop ({loop['rows']} rows, each on its own adapter, no server): "
            f"{loop['tokens_per_second']:,.1f} tokens/s; served: "
            f"{100 * served['tokens_per_second'] / loop['tokens_per_second']:.0f}% of it"
        )
    if "bf16" in r:
        b = r["bf16"]
        out.append(
            f"  with the base in bf16: served {b['own_adapter']['tokens_per_second']:,.1f} tokens/s "
            f"(fp32 {served['tokens_per_second']:,.1f}), the pure decode loop "
            f"{b['decode_loop']['tokens_per_second']:,.1f}; "
            f"served: {100 * b['own_adapter']['tokens_per_second'] / b['decode_loop']['tokens_per_second']:.0f}% of it"
        )
    return out


def describe_machine(machine: dict) -> str:
    peak = machine["gemm_peak_flops"]
    return (
        f"{machine['name']} ({machine['device']}, {machine['threads']} threads), torch {machine['torch']}; "
        f"GEMM peak measured in this run: bf16 {peak['bf16'] / 1e9:,.0f} GFLOP/s, fp32 "
        f"{peak['fp32'] / 1e9:,.0f} GFLOP/s"
    )


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def flops(run: dict) -> float:
    """A LoRA training run's FLOP/s."""
    return LORA_FLOPS_PER_PARAMETER * run["parameters"] * run["tokens_per_second"]
