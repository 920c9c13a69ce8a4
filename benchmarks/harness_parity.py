"""Benchmark (not a test): lm-evaluation-harness against `gpt2-adapt eval` on WikiText-2 test articles.

    .venv/bin/python -m benchmarks.harness_parity [--articles 6] [--context 256]

The articles are the first ones of ../shared/data/wikitext-2/test.txt (an article starts at a " = Title = "
line), one document each, as the harness's `EleutherAI/wikitext_document_level` pages are. The model is
`GPT2LMHeadModel(GPT2Config(n_positions=CONTEXT))` with random weights (seed 0) and the real GPT-2
tokenizer. The harness runs its own `wikitext` task functions (its detokenizer or none, its counting) over
those pages from a task folder written here; `gpt2-adapt eval` runs in this process on the same pages. It
prints the harness's figures, `eval --by-document`'s and their relative differences, plain and
WikiText-detokenized, and the stream protocols beside them. Needs the harness extra; a few minutes on 2 cores.
"""

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hub: everything here is local
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
UTILS = """from lm_eval.tasks.wikitext.preprocess_wikitext import process_results, wikitext_detokenizer


def page(doc):
    return doc["page"]
"""


def articles(text: str, count: int) -> list[str]:
    """The first `count` articles, each its lines from its " = Title = " line to the next one's."""
    found, lines = [], None  # None: before the first title
    for line in text.splitlines(keepends=True):
        if re.fullmatch(r" = [^=].* = \n", line):
            if lines:
                found.append("".join(lines))
                if len(found) == count:
                    return found
            lines = []
        if lines is not None:
            lines.append(line)
    return found + ["".join(lines or [])][: count - len(found)]


def harness(model: Path, folder: Path, pages: Path, context: int, detokenize: bool) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    name = "wikiparity" + ("_detok" if detokenize else "")
    (folder / "utils.py").write_text(UTILS)
    (folder / f"{name}.yaml").write_text(
        "\n".join(
            [
                f"task: {name}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    test: {pages}",
                "test_split: test",
                "output_type: loglikelihood_rolling",
                'doc_to_text: ""',
                f"doc_to_target: !function utils.{'wikitext_detokenizer' if detokenize else 'page'}",
                "process_results: !function utils.process_results",
                "metric_list:",
                *(f"  - metric: {m}" for m in METRICS),
                "",
            ]
        )
    )
    lm = HFLM(pretrained=str(model), device="cpu", batch_size=8, max_length=context)
    out = lm_eval.simple_evaluate(
        model=lm,
        tasks=[name],
        log_samples=False,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False),
    )
    return {m: out["results"][name][f"{m},none"] for m in METRICS}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=6)
    parser.add_argument("--context", type=int, default=256)
    args = parser.parse_args()
    vocab, text = SHARED / "gpt2-tokenizer" / "vocab.json", SHARED / "wikitext-2" / "test.txt"
    if not vocab.is_file() or not text.is_file():
        print(f"skipped: {SHARED} (WikiText-2 and the GPT-2 tokenizer) is not on this machine")
        return 0

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    import toolkit

    pages = articles(text.read_text(), args.articles)
    with tempfile.TemporaryDirectory(prefix="harness-parity-") as work:
        work = Path(work)
        model = work / "gpt2"
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(n_positions=args.context)).save_pretrained(model)
        tokenizer = GPT2TokenizerFast(vocab=str(vocab), merges=str(vocab.with_name("merges.txt")))
        tokenizer.model_max_length = args.context  # built locally it would claim 1e30
        tokenizer.save_pretrained(model)
        jsonl = work / "pages.jsonl"
        jsonl.write_text("".join(json.dumps({"page": p}) + "\n" for p in pages))
        tokens = sum(len(tokenizer(p)["input_ids"]) for p in pages)
        print(
            f"{len(pages)} WikiText-2 test articles, {tokens:,} GPT-2 tokens, {sum(len(p.encode()) for p in pages):,} "
            f"bytes; GPT2Config(n_positions={args.context}), random weights (seed 0)"
        )
        print(f"{'':44s} {'word ppl':>14s} {'byte ppl':>10s} {'bits/byte':>10s}")
        common = {"model": str(model), "files": [str(jsonl)], "text_column": "page", "context": args.context}
        for detokenize in (False, True):
            theirs = harness(model, work, jsonl, args.context, detokenize)
            [ours] = toolkit.evaluate(**common, by_document=True, detokenize="wikitext" if detokenize else None)
            kind = "wikitext-detokenized" if detokenize else "plain pages"
            print(f"{'harness, ' + kind:44s} " + " ".join(f"{theirs[m]:{w}.6f}" for m, w in zip(METRICS, (14, 10, 10))))
            print(
                f"{'eval --by-document, ' + kind:44s} "
                + " ".join(f"{getattr(ours.score, m):{w}.6f}" for m, w in zip(METRICS, (14, 10, 10)))
            )
            print(
                f"{'  relative difference':44s} "
                + " ".join(
                    f"{abs(getattr(ours.score, m) / theirs[m] - 1):{w}.1e}" for m, w in zip(METRICS, (14, 10, 10))
                )
            )
        for stride, label in (
            (None, "eval, one stream, disjoint"),
            (args.context // 4, f"eval, one stream, stride {args.context // 4}"),
        ):
            [row] = toolkit.evaluate(**common, stride=stride)
            print(
                f"{label:44s} {'':14s} {row.score.byte_perplexity:10.6f} {row.score.bits_per_byte:10.6f}"
                f"   ({row.score.tokens:,} tokens, {row.score.bytes:,} bytes: EOS after each article)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
