"""Benchmark (not a test): `gpt2-adapt bench --only serving` on the real 124M GPT-2 architecture, printing the
serving table of BENCHMARKS.md.

    .venv/bin/python -m benchmarks.serving [--new-tokens 64] [--clients 1 4 16] [--json FILE]

The model is `GPT2LMHeadModel(GPT2Config())` with random weights and the real GPT-2 tokenizer, read from
../shared/data (never copied here); the script says so and stops where that folder is absent. The server
runs in its own process; 1, 4 and 16 clients send greedy requests of new-tokens/2 tokens, (a) all on one
adapter, (b) each on its own (16 loaded), (c) to a server that generates one request at a time. About 10
minutes on 2 CPU cores; every figure is a speed, so run it on a quiet machine.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local

from benchmarks import gpt2_124m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64, help="twice the tokens each request generates")
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=[1, 4, 16],
        help="the table's rows: concurrent clients (at most 16; 16 alone takes a third of the time)",
    )
    parser.add_argument("--json", help="also write the measurements to this JSON file")
    args = parser.parse_args()
    if not gpt2_124m.available():
        return 0
    text = gpt2_124m.TEXT

    from benchmarks import targets
    from toolkit.bench import runner as bench
    from toolkit.bench.cases import Setup
    from toolkit.bench.report import describe_machine, serving_table

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as folder:
        model = gpt2_124m.write_model(folder)  # config and tokenizer only: the benchmark draws the weights
        setup = Setup(
            model=str(model),
            texts=[str(text)],
            new_tokens=args.new_tokens,
            clients=tuple(args.clients),
            parts=("serving",),
        )
        results = bench.measure(setup, report=lambda line: print(line, file=sys.stderr, flush=True))
    print(describe_machine(results["machine"]))
    print("model: GPT-2 124M (GPT2Config(), random weights), fp32; adapters: LoRA r=16 on c_attn")
    print("\n".join(serving_table(results["serving"])))
    print("\n".join(targets.lines(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
