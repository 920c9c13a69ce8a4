"""Benchmark (not a test): `gpt2-adapt bench` with the other pipelines' rows (comparisons.py) and the targets
(targets.py), on the real 124M GPT-2 architecture and WikiText-2, printing the one comparison table of
BENCHMARKS.md.

    .venv/bin/python -m benchmarks.speed [--steps 4] [--repeats 3] [--only training ...] [--json FILE]
                                         [--model FOLDER] [--text FILE] [--block-size 512]

The model is `GPT2LMHeadModel(GPT2Config())` with random weights (no pretrained GPT-2 can be had offline;
the cost is the architecture's), the tokenizer is the real GPT-2 one and the text WikiText-2 validation,
both from ../shared/data (--model and --text put others in their place); the script says so and stops where
it needs that folder and it is absent. About 15 minutes on 2 idle CPU cores: run it on a quiet machine,
since every figure is a speed.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local

from toolkit.threads import prepare_openmp

if __name__ == "__main__":  # as `gpt2-adapt bench` runs: OpenMP set before torch loads (not in spawned children)
    prepare_openmp()

from benchmarks import gpt2_124m


def main() -> int:
    from toolkit.bench.report import PARTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed training steps per run (after a warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS), help="parts to measure")
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    parser.add_argument("--model", help="another architecture and tokenizer (a folder; default: GPT-2 124M's)")
    parser.add_argument("--text", help="another training text, one document per line (default: WikiText-2's)")
    parser.add_argument("--block-size", type=int, default=512, help="tokens per training block (batch: 2 blocks)")
    args = parser.parse_args()
    if not (args.model and args.text) and not gpt2_124m.available():
        return 0

    from benchmarks import comparisons
    from toolkit.bench.cases import Setup

    with tempfile.TemporaryDirectory(prefix="bench-speed-") as folder:
        # GPT-2 124M's config and tokenizer only: the benchmark draws the weights
        model = args.model or gpt2_124m.write_model(folder)
        setup = Setup(
            model=str(model),
            texts=[args.text or str(gpt2_124m.TEXT)],
            block_size=args.block_size,
            steps=args.steps,
            repeats=args.repeats,
            parts=tuple(args.only),
        )
        results = comparisons.run(setup, report=lambda line: print(line, file=sys.stderr, flush=True))
    if not args.model:
        results["setup"]["model"] = "GPT-2 124M (GPT2Config())"
    print(comparisons.table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
