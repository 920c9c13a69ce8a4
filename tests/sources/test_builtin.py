"""builtin:tiny-gpt2 is a pretrained base, built deterministically and named by what went into it, and the
builtin corpora keep their held-out parts out of its training."""

import json
import math
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoConfig

import toolkit
from toolkit.sources import builtin, pretraining

SMALL = pretraining.PretrainingPlan(vocab_size=300, n_embd=32, n_positions=64, steps=3, batch_size=2, warmup_steps=1)


def _build(cache: Path, corpus: Path, plan) -> Path:
    os.environ["GPT2_ADAPT_CACHE"] = str(cache)  # restored by the `isolated` fixture
    return pretraining.build_tiny_gpt2(corpus, plan=plan)


def test_the_same_corpus_and_plan_give_the_same_folder_and_weights(tmp_path, corpus_dir):
    first = _build(tmp_path / "one", corpus_dir / "train.txt", SMALL)
    second = _build(tmp_path / "two", corpus_dir / "train.txt", SMALL)
    assert first.name == second.name
    weights = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert weights[0].keys() == weights[1].keys()
    assert all((weights[0][k] == weights[1][k]).all() for k in weights[0])
    random = builtin.random_gpt2(
        builtin.train_tokenizer((corpus_dir / "train.txt").read_text().splitlines(), 300, 64),
        n_embd=32,
        n_positions=64,
        n_layer=2,
        n_head=4,
    ).state_dict()
    assert not (weights[0]["transformer.h.0.attn.c_attn.weight"] == random["transformer.h.0.attn.c_attn.weight"]).all()
    assert (first / "tokenizer.json").exists() and AutoConfig.from_pretrained(first).vocab_size == 300


def test_another_plan_or_corpus_is_another_folder(tmp_path, corpus_dir):
    base = _build(tmp_path / "cache", corpus_dir / "train.txt", SMALL)
    other_plan = _build(
        tmp_path / "cache", corpus_dir / "train.txt", pretraining.PretrainingPlan(**{**SMALL.__dict__, "steps": 4})
    )
    other_corpus = _build(tmp_path / "cache", corpus_dir / "valid.txt", SMALL)
    assert len({base, other_plan, other_corpus}) == 3
    assert not list((tmp_path / "cache" / "builtin").glob(".tmp-*"))  # nothing half-built left behind


def test_the_builtin_base_knows_held_out_documentation(builtin_base):
    """Pretrained, its perplexity on the held-out reference topics is far below its vocabulary's size (a
    random model's is about the size)."""
    vocabulary = AutoConfig.from_pretrained(builtin_base).vocab_size
    held_out = builtin.python_prose()["validation"]  # a paragraph per line, each a document
    pretrained = toolkit.evaluate(model="builtin:tiny-gpt2", files=[str(held_out)])[0].score
    assert pretrained.perplexity < vocabulary / 5, pretrained
    assert math.isfinite(pretrained.perplexity) and pretrained.tokens > 5000


def test_the_builtin_base_scores_no_worse_with_more_context(builtin_base):
    """Pretrained on every position it declares: sliding windows, which give most tokens more context than
    disjoint ones, score held-out prose no worse at the full context (a base trained on 128 of its 256
    positions scored worse)."""
    held_out = str(builtin.python_prose()["validation"])
    n_positions = AutoConfig.from_pretrained(builtin_base).n_positions
    disjoint, sliding = (
        toolkit.evaluate(
            model="builtin:tiny-gpt2", files=[held_out], context=n_positions, stride=stride, max_tokens=6000
        )[0].score
        for stride in (None, n_positions // 4)
    )
    assert disjoint.tokens == sliding.tokens
    assert sliding.perplexity <= disjoint.perplexity, (sliding.perplexity, disjoint.perplexity)


def test_python_code_holds_each_module_once_and_validation_is_unseen_by_the_base(builtin_base):
    files = builtin.python_code()
    train = [json.loads(line)["text"] for line in files["train"].read_text(encoding="utf-8").splitlines()]
    validation = [json.loads(line)["text"] for line in files["validation"].read_text(encoding="utf-8").splitlines()]
    assert len(train) > 8 * len(validation) > 0
    assert all(len(text.splitlines()) <= builtin.VALIDATION_LINES for text in validation)
    assert not {text[:2000] for text in train} & {text[:2000] for text in validation}
    prose = builtin.python_prose()["train"].read_text(encoding="utf-8")
    lines = prose.splitlines()  # paragraphs of prose, one per line: no indented code, no doctest, no table
    assert len(lines) > 2000 and not any(line.startswith((" ", ">>>", "|", "+")) for line in lines)
    held_out = builtin._modules()[0]  # module 0 is held out: its docstrings are not in the base's corpus
    docstrings = builtin._docstring_paragraphs(held_out)
    assert docstrings and not any(paragraph in prose for paragraph in docstrings if len(paragraph) > 80)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Title\n*****\n\nA first paragraph of prose,\nwritten over two lines.\n\n   indented = code\n\nShort.",
            ["A first paragraph of prose, written over two lines."],
        ),
        ("+-----+\n| a table row that is long enough to count |\n+-----+", []),
    ],
)
def test_paragraphs_keep_prose_only(text, expected):
    assert builtin.paragraphs(text) == expected
