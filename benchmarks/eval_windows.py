"""Benchmark (not a test): the scorer before the every-token windows (commit ba23ac9) against the current
one, in one process, alternating, on the 124M architecture: does scoring every token cost speed?

    .venv/bin/python -m benchmarks.eval_windows [--precision bf16|fp32] [--before ba23ac9]

The model is `GPT2LMHeadModel(GPT2Config())` with random weights (seed 0), the real GPT-2 tokenizer and
WikiText-2 validation from ../shared/data; 8,192 tokens at context 512, three rounds, each scorer once a
round. The old code is taken from git (`git archive`) into a temporary folder.
"""

import argparse
import contextlib
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def scorer(root: Path):
    """toolkit's scoring, streams, records and modeling.base modules as they are under `root`."""
    for name in [n for n in sys.modules if n == "toolkit" or n.startswith("toolkit.")]:
        del sys.modules[name]
    sys.path.insert(0, str(root))
    try:
        return [
            importlib.import_module(f"toolkit.{m}")
            for m in ("evaluation.scoring", "data.streams", "records", "modeling.base")
        ]
    finally:
        sys.path.pop(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--before", default="ba23ac9")
    args = parser.parse_args()
    vocab, text = SHARED / "gpt2-tokenizer" / "vocab.json", SHARED / "wikitext-2" / "valid.txt"
    if not vocab.is_file():
        print(f"skipped: {SHARED} is not on this machine")
        return 0
    import datasets
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    tokenizer = GPT2TokenizerFast(vocab=str(vocab), merges=str(vocab.with_name("merges.txt")))
    documents = datasets.Dataset.from_dict({"text": [t for t in text.read_text().splitlines() if t.strip()][:400]})
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    )
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", args.before, "toolkit"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", old], input=archive.stdout, check=True)
        versions = {f"before ({args.before})": scorer(Path(old)), "now": scorer(REPO)}
        streams = {k: v[1].token_stream(documents, "text", tokenizer) for k, v in versions.items()}
        rates = {k: [] for k in versions}
        for _ in range(3):
            for k, (scoring, _, records, base) in versions.items():
                with base.scoring_attention(model):
                    done = scoring.score(
                        model, streams[k], records.Protocol(512, 512), max_tokens=8192, autocast=autocast
                    )
                rates[k].append(done.score.tokens / done.seconds)
    for k, runs in rates.items():
        print(f"{k:18s} {args.precision} tokens/s: {', '.join(f'{r:.1f}' for r in runs)}; median {sorted(runs)[1]:.1f}")
    medians = [sorted(r)[1] for r in rates.values()]
    print(f"now / before: {medians[1] / medians[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
