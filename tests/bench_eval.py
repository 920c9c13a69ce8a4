"""Benchmark (not a test; pytest does not collect it): training vs evaluation tokens/s on the real 124M
GPT-2 architecture, through the toolkit's own paths.

    .venv/bin/python tests/bench_eval.py [--steps 8] [--eval-tokens 8192] [--context 512]

Random weights (`GPT2LMHeadModel(GPT2Config())`, no pretrained weights can be had offline), the real GPT-2
tokenizer and WikiText-2 validation text from ../shared/data (skipped, with a message, when it is absent).
Training: `toolkit.train.train` of a LoRA r=16 on c_attn, batch 2 x `--context` tokens, fp32; its tokens/s
is the one metrics.json records (training time only). Evaluation: `toolkit.eval_run.run` of the same
adapter and its base, disjoint blocks of `--context` tokens, fp32, `--eval-tokens` scored tokens each.
About 2 minutes on 2 idle CPU cores (more when other work shares them).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps (batch 2 x context)")
    parser.add_argument("--eval-tokens", type=int, default=8192, help="tokens scored per evaluated row")
    parser.add_argument("--context", type=int, default=512, help="block size for training and evaluation")
    args = parser.parse_args()
    if not (SHARED / "wikitext-2" / "valid.txt").is_file() or not (SHARED / "gpt2-tokenizer" / "vocab.json").is_file():
        print(f"skipped: {SHARED} (WikiText-2 and the GPT-2 tokenizer) is not on this machine")
        return 0

    import logging

    logging.getLogger("toolkit").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="gpt2-adapt-bench-") as folder:  # a 500 MB model: never left behind
        return bench(Path(folder), args)


def bench(work: Path, args) -> int:
    import tomli_w
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    from toolkit.eval_run import EvalOptions, read_texts, run
    from toolkit.recipe import load_recipe
    from toolkit.store import AdapterStore
    from toolkit.train import train

    os.environ["GPT2_ADAPT_CACHE"] = str(work / "cache")
    tokenizer = GPT2TokenizerFast(
        vocab=str(SHARED / "gpt2-tokenizer" / "vocab.json"), merges=str(SHARED / "gpt2-tokenizer" / "merges.txt")
    )
    tokenizer.model_max_length = 1024
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(work / "gpt2-random")
    tokenizer.save_pretrained(work / "gpt2-random")

    # Training text: enough lines for the steps; evaluation text for training's own base/final evaluation:
    # a few blocks, so that the benchmark is the training, not that evaluation.
    lines = (SHARED / "wikitext-2" / "valid.txt").read_text(encoding="utf-8").splitlines()
    (work / "train.txt").write_text("\n".join(lines[:3000]) + "\n", encoding="utf-8")
    (work / "eval.txt").write_text("\n".join(lines[3000:3060]) + "\n", encoding="utf-8")
    recipe_path = work / "bench.toml"
    recipe_path.write_text(tomli_w.dumps({
        "model": {"name": str(work / "gpt2-random")},
        "data": {"train_files": [str(work / "train.txt")], "eval_files": [str(work / "eval.txt")],
                 "block_size": args.context},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "targets": "attn"},
        "training": {"max_steps": args.steps, "batch_size": 2, "precision": "fp32", "eval_every": 0,
                     "save_every": 10_000, "log_every": 10_000},
        "output": {"name": "bench"},
    }))
    store = AdapterStore(work / "store")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; GPT-2 124M (random weights), "
          f"LoRA r=16 on c_attn, fp32, blocks of {args.context} tokens", flush=True)
    trained = train(load_recipe(recipe_path), store)
    t = trained.metrics["train"]
    print(f"training:   {t['tokens']:>7,} tokens in {t['seconds']:6.1f} s = {t['tokens_per_second']:7.1f} tokens/s "
          f"(batch 2, forward + backward + AdamW)", flush=True)

    texts = read_texts(files=(str(SHARED / "wikitext-2" / "valid.txt"),))
    options = EvalOptions(max_tokens=args.eval_tokens, context=args.context)
    results = run(texts, options, adapters=["bench"], store=store)
    for r in results:
        row = r["adapter"] or "base"
        print(f"evaluation ({row}): {r['tokens']:>7,} tokens in {r['seconds']:6.1f} s = "
              f"{r['tokens_per_second']:7.1f} tokens/s (forward only, perplexity {r['perplexity']:.1f})", flush=True)
    adapted = next(r for r in results if r["adapter"])
    print(f"evaluation / training speed (same adapter): {adapted['tokens_per_second'] / t['tokens_per_second']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
