"""Benchmark (not a test): `gpt2-adapt bench` on the real 124M GPT-2
architecture and WikiText-2, printing the one comparison table of BENCHMARKS.md.

    .venv/bin/python benchmarks/speed.py [--steps 4] [--repeats 3] [--only training ...] [--json]

The model is `GPT2LMHeadModel(GPT2Config())` with random weights (no pretrained GPT-2 can be had offline;
the cost is the architecture's), the tokenizer is the real GPT-2 one and the text WikiText-2 validation,
both from ../shared/data; the script says so and stops where that folder is absent. About 15 minutes on
2 idle CPU cores: run it on a quiet machine, since every figure is a speed.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toolkit.threads import prepare_openmp

if __name__ == "__main__":  # as `gpt2-adapt bench` runs: OpenMP set before torch loads (not in spawned children)
    prepare_openmp()

import gpt2_124m


def main() -> int:
    from toolkit.bench.report import PARTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run (batch 2 x 512)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to measure")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args()
    if not gpt2_124m.available():
        return 0
    text = gpt2_124m.TEXT

    from toolkit.bench import run as bench
    from toolkit.bench.cases import Setup
    from toolkit.bench.report import table

    with tempfile.TemporaryDirectory(prefix="bench-speed-") as folder:
        model = gpt2_124m.write_model(folder)  # config and tokenizer only: the benchmark draws the weights
        setup = Setup(
            model=str(model), texts=[str(text)], steps=args.steps, repeats=args.repeats, parts=tuple(args.only)
        )
        results = bench.run(setup, report=lambda line: print(line, file=sys.stderr, flush=True))
    results["setup"]["model"] = "GPT-2 124M (GPT2Config())"
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
