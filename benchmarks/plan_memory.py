"""Benchmark (not a test): the data behind `plan`'s memory model, and how well it fits.

    .venv/bin/python -m benchmarks.plan_memory [--shapes 2x512 1x256 4x256 1x1024] [--precisions fp32 bf16 int8]

For each batch shape and base precision, the benchmark's training case (`gpt2-adapt train` in a fresh
process, the default adapter r=16 on c_attn, 5 steps) runs on the real 124M GPT-2 architecture (random
weights) with the real GPT-2 tokenizer and WikiText-2 validation text from ../shared/data, and reports its
peak resident memory less what the process held before loading anything: the benchmark's "(training)"
column. Then it fits, per precision, bytes per token per hidden unit, bytes per attention score and a fixed
part (least squares) and prints `plan`'s estimate (toolkit.training.plan.MEMORY_MODEL) against each
measurement. About 10 minutes on 2 CPU cores.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local

from benchmarks import gpt2_124m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["2x512", "1x256", "4x256", "1x1024"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "int8"])
    args = parser.parse_args()

    import numpy as np
    from transformers import AutoConfig

    from toolkit.bench import runner as bench
    from toolkit.bench.cases import Setup, train_case
    from toolkit.config.recipe import DataSpec, ModelSpec, Recipe, TrainingSpec
    from toolkit.training import plan

    if not gpt2_124m.available():
        return 0
    text = gpt2_124m.TEXT
    overrides = {
        "fp32": {"training.precision": "fp32"},
        "bf16": {"training.precision": "bf16"},
        "int8": {"training.precision": "fp32", "quantization.mode": "int8"},
    }
    with tempfile.TemporaryDirectory(prefix="plan-memory-") as folder:
        model = gpt2_124m.write_model(folder)  # config and tokenizer only: the benchmark draws the weights
        print("precision  shape    measured   plan's estimate   estimate/measured")
        for precision in args.precisions:
            rows, targets = [], []
            for shape in args.shapes:
                batch, block = map(int, shape.split("x"))
                with tempfile.TemporaryDirectory(prefix="shape-", dir=folder) as work:
                    setup = Setup(
                        model=str(model),
                        texts=[str(text)],
                        work=work,
                        block_size=block,
                        batch_size=batch,
                        steps=4,
                        repeats=1,
                    )
                    bench.prepare(setup)
                    measured = bench.in_child(train_case, setup, f"memory-{precision}", overrides[precision])[
                        "training_memory"
                    ]
                    base = Path(work) / "base"
                    config = AutoConfig.from_pretrained(base)
                    recipe = Recipe(
                        model=ModelSpec(name=str(base)),
                        data=DataSpec(train_files=["unused"], block_size=block),
                        training=TrainingSpec(batch_size=batch),
                    )
                counts = plan.parameter_counts(recipe, config)
                estimate = plan.memory_estimate(recipe, config, counts, precision)
                print(
                    f"{precision:9s}  {shape:7s} {measured / 2**30:7.2f} GiB  {estimate / 2**30:10.2f} GiB"
                    f"   {estimate / measured:10.2f}",
                    flush=True,
                )
                known = estimate - _step_part(recipe, config, precision)
                tokens_hidden = config.n_layer * batch * block * config.n_embd
                scores = config.n_layer * batch * config.n_head * block**2
                rows.append([1.0, tokens_hidden, scores])
                targets.append(measured - known)
            coef, *_ = np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)
            print(
                f"  fit for {precision}: {coef[1]:.0f} bytes per token-hidden, {coef[2]:.1f} per score, "
                f"{coef[0] / 2**20:.0f} MiB fixed (MEMORY_MODEL has {plan.MEMORY_MODEL[precision]})"
            )
    return 0


def _step_part(recipe, config, precision) -> int:
    """What MEMORY_MODEL adds for the step (the fitted part), so that the rest is what plan counts exactly."""
    from toolkit.training.plan import MEMORY_MODEL

    per_token, per_score, fixed = MEMORY_MODEL[precision]
    tokens = recipe.training.batch_size * recipe.data.block_size
    scores = recipe.training.batch_size * config.n_head * recipe.data.block_size**2
    return int(config.n_layer * (tokens * config.n_embd * per_token + scores * per_score) + fixed)


if __name__ == "__main__":
    sys.exit(main())
