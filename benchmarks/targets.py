"""The project's targets: what `gpt2-adapt bench`'s figures (with the other pipelines' rows of
comparisons.py) should reach, judged against this machine's own measurements."""

from __future__ import annotations

from toolkit.bench.report import BUSY, PLAN_ROWS, flops

# Base weights in memory against fp32: the quantized layers in 8 or 4 bits, embeddings and head in fp32.
WEIGHT_TARGETS = {"toolkit-int8": 0.55, "toolkit-nf4": 0.45}


def lines(results: dict) -> list[str]:
    """The targets as the end of a table: a heading, then one line each (none where nothing was judged)."""
    rows = [
        f"  {what:55s} {figure:>10s}   target {target:8s} {'met' if met else 'MISSED'}"
        for what, figure, target, met in targets(results)
    ]
    return ["", "Targets", *rows] if rows else []


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
        share = flops(t["toolkit"]) / peak
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
    for precision, name in PLAN_ROWS.items():
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


def _short(case: str) -> str:
    """ "toolkit-int8-checkpointing" -> "int8 + checkpointing"."""
    return case.removeprefix("toolkit-").replace("-checkpointing", " + checkpointing")
