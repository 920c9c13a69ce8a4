"""The benchmark's results as one table, with each target and whether this machine met it."""

from __future__ import annotations

PARTS = ("training", "memory", "eval", "generation", "data", "serving")
LABELS = {
    "seed": "seed pipeline: padded lines, full fine-tune, fp32",
    "peft": "plain peft + Trainer: run_clm packing, fp32",
    "peft-bf16": "plain peft + Trainer: run_clm packing, bf16",
    "toolkit": "gpt2-adapt default recipe",
    "toolkit-nodropout": "gpt2-adapt, training.base_dropout = false",
    "toolkit-fp32": "gpt2-adapt, fp32 (training.precision = fp32)",
    "toolkit-int8": "gpt2-adapt, int8 base, fp32",
    "toolkit-int8-checkpointing": "gpt2-adapt, int8 base + gradient checkpointing",
    "toolkit-nf4": "gpt2-adapt, nf4 base, fp32",
}
BUSY = "-busy"  # a case's name with this suffix: the same case, run while another program keeps one core busy
LABELS |= {name + BUSY: f"{label}, one core busy" for name, label in LABELS.items()}
# Base weights in memory against fp32: the quantized layers in 8 or 4 bits, embeddings and head in fp32.
WEIGHT_TARGETS = {"toolkit-int8": 0.55, "toolkit-nf4": 0.45}
# plan's estimate for each base precision, and the run measured at it
_PLAN_ROWS = {"fp32": "toolkit-fp32", "bf16": "toolkit", "int8": "toolkit-int8", "nf4": "toolkit-nf4"}
LORA_FLOPS_PER_PARAMETER = 4  # forward 2 + backward to the activations 2; the frozen base has no weight gradients


def table(results: dict) -> str:
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
            share = "" if name == "seed" else f"{100 * _flops(r) / peak:10.0f}%"
            out.append(
                f"{LABELS[name]:50s} {r['precision']:>9s} {r['tokens_per_second']:12,.1f} {share:>11s} "
                f"{r['peak_memory'] / 2**30:7.2f} GiB {r['training_memory'] / 2**30:6.2f} GiB"
            )
        out.append(
            f"  peak memory: the process's peak {'allocated on the GPU' if machine['device'] == 'cuda' else 'RSS'}; "
            "(training): less what the process held before loading anything"
        )
        busy = [
            f"{LABELS[n.removesuffix(BUSY)].split(':')[0]} on {r['threads']}"
            for n, r in training.items()
            if n.endswith(BUSY)
        ]
        if busy:
            out.append(
                "  one core busy: another program (a bare loop) kept one core busy during the run; threads at the "
                f"end: {', '.join(busy)}"
            )
        if "seed" in training:
            out.append(
                f"  (seed pipeline: {100 * training['seed']['padding_share']:.0f}% of its positions are padding)"
            )
    if results.get("plan"):
        out += ["", "gpt2-adapt plan's memory estimate against the measured training memory:"]
        for precision, name in _PLAN_ROWS.items():
            if name in training and (precision != "bf16" or training[name]["precision"] == "bf16"):
                measured = training[name]["training_memory"]
                estimate = results["plan"][precision]
                out.append(
                    f"  {precision:5s} estimate {estimate / 2**30:5.2f} GiB, measured {measured / 2**30:5.2f} GiB "
                    f"({100 * (estimate / measured - 1):+.0f}%)"
                )
    out += ["", "Targets"] + [
        f"  {what:55s} {figure:>10s}   target {target:8s} {'met' if met else 'MISSED'}"
        for what, figure, target, met in targets(results)
    ]
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


def _short(case: str) -> str:
    """ "toolkit-int8-checkpointing" -> "int8 + checkpointing"."""
    return case.removeprefix("toolkit-").replace("-checkpointing", " + checkpointing")


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _flops(run: dict) -> float:
    return LORA_FLOPS_PER_PARAMETER * run["parameters"] * run["tokens_per_second"]


def targets(results: dict) -> list[tuple[str, str, str, bool]]:
    """(what, figure, target, met) for each target whose measurements are in the results."""
    t = results.get("training", {})
    peak = results["machine"]["gemm_peak_flops"]["bf16"]
    rows = []
    if "toolkit" in t:
        default = t["toolkit"]["tokens_per_second"]
        if "seed" in t:
            ratio = default / t["seed"]["tokens_per_second"]
            rows.append(("default vs seed pipeline, useful tokens/s", f"{ratio:.1f}x", ">= 10x", ratio >= 10))
        plain = [name for name in ("peft", "peft-bf16") if name in t]
        if plain:  # against the fastest way the plain libraries run on this machine
            fastest = max(plain, key=lambda name: t[name]["tokens_per_second"])
            ratio = default / t[fastest]["tokens_per_second"]
            rows.append(
                (
                    f"default vs fastest plain peft + Trainer ({t[fastest]['precision']}), tokens/s",
                    f"{ratio:.2f}x",
                    ">= 2.5x",
                    ratio >= 2.5,
                )
            )
        share = _flops(t["toolkit"]) / peak
        rows.append(("default, share of the bf16 GEMM peak", f"{100 * share:.0f}%", ">= 45%", share >= 0.45))
        if "toolkit" + BUSY in t:  # one free core allows about half the quiet speed
            busy = t["toolkit" + BUSY]["tokens_per_second"]
            rows.append(
                (
                    "default, one core busy vs quiet, tokens/s",
                    f"{100 * busy / default:.0f}%",
                    ">= 45%",
                    busy >= 0.45 * default,
                )
            )
            plain = [name for name in ("peft", "peft-bf16") if name + BUSY in t]
            if plain:
                other = t[plain[-1] + BUSY]
                ratio = busy / other["tokens_per_second"]
                rows.append(
                    (
                        f"default vs plain peft + Trainer ({other['precision']}), one core busy",
                        f"{ratio:.2f}x",
                        "> 1x",
                        ratio > 1,
                    )
                )
    if "toolkit-fp32" in t:
        for name, target in WEIGHT_TARGETS.items():
            if name in t:
                ratio = t[name]["weights_memory"] / t["toolkit-fp32"]["weights_memory"]
                rows.append(
                    (
                        f"base weights in memory, {_short(name)} / fp32",
                        f"{100 * ratio:.0f}%",
                        f"<= {100 * target:.0f}%",
                        ratio <= target,
                    )
                )
        for name in ("toolkit-int8", "toolkit-int8-checkpointing", "toolkit-nf4"):
            if name in t:
                ratio = t[name]["training_memory"] / t["toolkit-fp32"]["training_memory"]
                rows.append((f"training memory, {_short(name)} / fp32", f"{100 * ratio:.0f}%", "<= 55%", ratio <= 0.55))
    for precision, name in _PLAN_ROWS.items():
        if results.get("plan") and name in t and (precision != "bf16" or t[name]["precision"] == "bf16"):
            error = results["plan"][precision] / t[name]["training_memory"] - 1
            rows.append(
                (
                    f"plan's memory estimate, {precision}, vs measured",
                    f"{100 * error:+.0f}%",
                    "within 25%",
                    abs(error) <= 0.25,
                )
            )
    if results.get("eval") and "toolkit" in t:
        same = next((e for e in results["eval"] if e["precision"] == t["toolkit"]["precision"]), results["eval"][0])
        ratio = same["tokens_per_second"] / t["toolkit"]["tokens_per_second"]
        rows.append((f"evaluation ({same['precision']}) vs training tokens/s", f"{ratio:.2f}x", ">= 2x", ratio >= 2))
    if results.get("generation"):
        g = results["generation"]
        ratio = g["merged"] / g["base"]
        rows.append(("generation, merged vs base", f"{100 * ratio:.0f}%", ">= 97%", ratio >= 0.97))
    if results.get("serving"):
        r = results["serving"]
        most = max(r["own_adapter"])
        own, one, single = (
            r[key][most]["tokens_per_second"] for key in ("own_adapter", "one_adapter", "one_at_a_time")
        )
        rows.append(
            (
                f"serving {most} clients: own adapters vs one adapter",
                f"{100 * own / one:.0f}%",
                ">= 80%",
                own >= 0.8 * one,
            )
        )
        rows.append(
            (f"serving {most} clients: batched vs one at a time", f"{own / single:.1f}x", ">= 4x", own >= 4 * single)
        )
        ratio = r["memory"]["per_adapter"] / r["memory"]["adapter_file"]
        rows.append(("serving: memory per loaded adapter vs its file", f"{ratio:.1f}x", "<= 2x", ratio <= 2))
        if "decode_loop" in r:
            share = own / r["decode_loop"]["tokens_per_second"]
            rows.append(
                (f"serving {most} clients vs the pure decode loop", f"{100 * share:.0f}%", ">= 70%", share >= 0.7)
            )
    return rows
