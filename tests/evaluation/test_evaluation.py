"""`gpt2-adapt eval` and its engine: each protocol against a plain-torch computation from its definition,
training's own figures reproduced, exact byte and word counts, the metric summed across batches and
processes, the adapters x texts matrix, 8-bit and bf16 bases, and one-line errors for bad input.

Real transformers, peft, datasets, bitsandbytes and `evaluate` on the tiny GPT-2 (64 positions, a 300-token
BPE); adapters are trained once per module by the real `gpt2-adapt train`.
"""

import dataclasses
import json
import math
import multiprocessing
import re
import struct
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import tomli_w
import torch
from conftest import tiny_recipe
from helpers import results_of, run_cli, tiny_llama_config
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from toolkit.data.packing import pack
from toolkit.data.streams import token_stream, word_starts
from toolkit.evaluation.metric import METRIC_PATH
from toolkit.evaluation.protocol import windows
from toolkit.evaluation.report import HEATMAP_DPI, figure_inches
from toolkit.evaluation.scoring import score
from toolkit.records import Protocol

CONTEXT = 64  # the tiny model's n_positions
REL = 1e-6  # fp32 model, float64 sums: the engine and the plain computation agree to this


def score_dict(model, stream, protocol, **kwargs) -> dict:
    """The scorer's result as `eval --json` reports its figures, with the protocol."""
    result = score(model, stream, protocol, **kwargs).score
    return {**dataclasses.asdict(result), "protocol": protocol.to_json(result.tokens)}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def documents(corpus_dir) -> datasets.Dataset:
    """The first 24 validation lines (about 650 tokens), with blank rows the reader must skip."""
    lines = (corpus_dir / "valid.txt").read_text().splitlines()[:24]
    return datasets.Dataset.from_dict({"text": lines[:10] + ["", "   "] + lines[10:]})


def stream_by_hand(documents, tokenizer) -> torch.Tensor:
    """EOS, then each non-blank document's tokens followed by EOS."""
    ids = [tokenizer.eos_token_id]
    for text in documents["text"]:
        if text.strip():
            ids += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids)


@torch.no_grad()
def nll_by_definition(model, ids: torch.Tensor, scored: list[tuple[int, int]]) -> float:
    """The sum over (p, start) of -log P(token p | tokens start .. p-1), from the model's full logits in
    float64. Tokens with the same context start share one forward pass: attention is causal, so the
    logits at p - 1 see tokens start .. p-1 and nothing after."""
    by_start = defaultdict(list)
    for p, start in scored:
        by_start[start].append(p)
    total = 0.0
    for start, positions in by_start.items():
        logp = torch.log_softmax(model(ids[start : max(positions)][None]).logits[0].double(), -1)
        total -= sum(logp[p - 1 - start, ids[p]].item() for p in positions)
    return total


def scored_by_definition(n: int, c: int, s: int, first: int = 0) -> list[tuple[int, int]]:
    """(p, start of its context) for every token of the text at stream positions [first, n) (position
    `first` an EOS, context only), from the protocol's definition token by token: window k starts at
    first + k*s and predicts the next token at each of its c positions; a token belongs to the first window
    that predicts it; the first window whose predictions reach the last token is moved back to end there."""
    out = []
    for p in range(first + 1, n):
        k = max(0, -(-(p - first - c) // s))  # the first k with first + k*s + c >= p
        start = first + k * s
        if start + c >= n - 1:  # the last window: a full window of context, ending at the last token
            start = max(first, n - 1 - c)
        out.append((p, start))
    return out


# ---------------------------------------------------------------- the protocols, exactly


def test_disjoint_scores_every_token_of_the_stream_once_by_plain_torch(model, tokenizer, documents):
    """S = C: the stream is EOS then training's packed stream; windows of C positions each predict C tokens,
    the last window moved back to end at the last token; the result is exp(mean NLL) of every token after
    the leading EOS, computed directly from the model's logits."""
    stream = token_stream(documents, "text", tokenizer)
    ids = stream_by_hand(documents, tokenizer)
    np.testing.assert_array_equal(stream.ids, ids.numpy())
    blocks, stats = pack(documents, "text", tokenizer, CONTEXT)
    assert stats["blocks"] >= 8 and stats["dropped"] > 0  # a tail that training drops and evaluation scores
    np.testing.assert_array_equal(stream.ids[1 : 1 + blocks.size], blocks.reshape(-1))

    result = score_dict(model, stream, Protocol(CONTEXT, CONTEXT), batch_size=3)  # 3 + 3 + 3 ... and a short last batch

    expected = scored_by_definition(len(ids), CONTEXT, CONTEXT)
    assert [p for p, _ in expected] == list(range(1, len(ids)))  # every token but the leading EOS, once
    assert expected[0] == (1, 0) and expected[CONTEXT] == (CONTEXT + 1, CONTEXT)  # the first given EOS alone
    nll = nll_by_definition(model, ids, expected)
    assert result["tokens"] == len(ids) - 1 == stats["tokens"]
    assert abs(result["mean_nll"] - nll / len(expected)) / (nll / len(expected)) <= REL
    assert {k: result["protocol"][k] for k in ("kind", "context", "stride", "by_document")} == {
        "kind": "disjoint",
        "context": CONTEXT,
        "stride": CONTEXT,
        "by_document": False,
    }
    assert result["protocol"]["description"].startswith(f"{len(ids) - 1:,} tokens, each scored once")


def test_a_text_shorter_than_a_window_is_scored_whole(model, tokenizer):
    """Nine words at a context of 64: every token, the first given EOS, in one window shorter than the context."""
    stream = token_stream(
        datasets.Dataset.from_dict({"text": ["The cat sees the river. A dog likes the moon."]}), "text", tokenizer
    )
    ids = torch.from_numpy(stream.ids)
    result = score_dict(model, stream, Protocol(CONTEXT, CONTEXT))
    assert result["tokens"] == len(ids) - 1 < CONTEXT
    nll = nll_by_definition(model, ids, [(p, 0) for p in range(1, len(ids))])
    assert result["mean_nll"] == pytest.approx(nll / (len(ids) - 1), rel=REL)


@pytest.mark.parametrize("stride", [1, 16, 40])
def test_sliding_window_scores_each_token_once_with_the_context_it_defines(model, tokenizer, documents, stride):
    """Every token's NLL taken alone, with exactly the left context the definition gives it (for stride 1:
    all of it, up to C - 1 tokens), summed: equal to the engine's batched windows."""
    if stride == 1:  # a forward pass per token: keep the text short
        documents = documents.select(range(8))
    stream = token_stream(documents, "text", tokenizer)
    ids = torch.from_numpy(stream.ids)
    expected = scored_by_definition(len(ids), CONTEXT, stride)
    assert [p for p, _ in expected] == list(range(1, len(ids)))  # every token once, whatever the stride
    assert all(p - start >= CONTEXT - stride + 1 for p, start in expected[CONTEXT:])  # at least C - S + 1 of context
    if stride == 1:
        assert all(p - start == min(p, CONTEXT) for p, start in expected)  # all the context there is, up to C
    nll = nll_by_definition(model, ids, expected)

    result = score_dict(model, stream, Protocol(CONTEXT, stride), batch_size=5)

    assert result["tokens"] == len(expected)
    assert abs(result["mean_nll"] - nll / len(expected)) / (nll / len(expected)) <= REL
    assert abs(result["perplexity"] - math.exp(nll / len(expected))) / result["perplexity"] <= REL
    assert result["protocol"]["kind"] == ("sliding" if stride < CONTEXT else "disjoint")


@pytest.mark.parametrize("stride", [64, 24])
def test_by_document_each_document_is_scored_alone_from_eos(model, tokenizer, corpus_dir, stride):
    """By document: each document's tokens (not its EOS) scored once, its windows starting at the EOS before it
    and never reaching into the document before; documents longer and shorter than a window."""
    lines = (corpus_dir / "valid.txt").read_text().splitlines()
    texts = [" ".join(lines[:12]), lines[12], " ".join(lines[13:20])]  # about 200, 15 and 120 tokens
    documents = datasets.Dataset.from_dict({"text": texts})
    stream = token_stream(documents, "text", tokenizer, by_document=True)
    ids = torch.from_numpy(stream.ids)
    expected = []
    for start, end in zip(stream.starts, stream.ends()):
        expected += scored_by_definition(int(end), CONTEXT, stride, first=int(start) - 1)
    assert len(expected) == stream.tokens == len(ids) - 1 - 3
    assert max(stream.ends() - stream.starts) > 2 * CONTEXT and min(stream.ends() - stream.starts) < CONTEXT

    result = score_dict(model, stream, Protocol(CONTEXT, stride, by_document=True), batch_size=4)

    nll = nll_by_definition(model, ids, expected)
    assert result["tokens"] == len(expected)
    assert result["mean_nll"] == pytest.approx(nll / len(expected), rel=REL)
    assert result["protocol"]["by_document"] is True
    assert result["bytes"] == sum(len(t.encode()) for t in texts)  # no byte for the EOS: it is not scored
    assert result["words"] == sum(len(re.split(r"\s+", t)) for t in texts)


def test_max_tokens_scores_exactly_the_first_n_tokens_of_the_protocol(model, tokenizer, documents):
    """--max-tokens N: the first N tokens the full protocol would score, no more, with the same contexts;
    the stream is read only as far as needed."""
    stream = token_stream(documents, "text", tokenizer)
    ids = torch.from_numpy(stream.ids)
    first = scored_by_definition(len(ids), CONTEXT, 16)[:100]
    nll = nll_by_definition(model, ids, first)

    result = score_dict(model, stream, Protocol(CONTEXT, 16), max_tokens=100)
    assert result["tokens"] == 100
    assert result["mean_nll"] == pytest.approx(nll / 100, rel=REL)
    assert sum(w.hi - w.lo for w in windows(stream, Protocol(CONTEXT, 16), 100)) == 100

    short = token_stream(documents, "text", tokenizer, limit=300)
    assert 300 <= len(short.ids) < len(stream.ids) and short.documents < stream.documents
    first_five = token_stream(documents, "text", tokenizer, max_documents=5)  # --limit 5
    assert first_five.documents == 5 and np.array_equal(first_five.ids, stream.ids[: len(first_five.ids)])
    assert score_dict(model, short, Protocol(CONTEXT, 16), max_tokens=100)["mean_nll"] == result["mean_nll"]


def test_windows_score_every_token_once_within_the_context():
    """For any length, context and stride: the scored positions are exactly 1 .. n-1, each window holds at
    most C tokens and predicts from them, and matches the definition token by token."""
    from toolkit.data.streams import TokenStream

    for n, c, s in [
        (200, 64, 64),
        (200, 64, 1),
        (200, 64, 17),
        (65, 64, 64),
        (66, 64, 64),
        (63, 64, 8),
        (1000, 10, 3),
        (2, 64, 64),
        (130, 1, 1),
    ]:
        stream = TokenStream(np.zeros(n, dtype=np.int64), np.ones(n), np.ones(n), np.array([1]))
        found = windows(stream, Protocol(c, s))
        scored = [(p, w.start) for w in found for p in range(w.lo, w.hi)]
        assert scored == scored_by_definition(n, c, s), (n, c, s)
        assert all(0 < w.hi - 1 - w.start <= c and w.start < w.lo for w in found)


# ---------------------------------------------------------------- counts and the metric


def test_bytes_and_words_of_hand_made_text(model, tokenizer):
    """The stream: bytes are the UTF-8 bytes of the documents plus one per document end; words are str.split()
    words plus one per document end. By document, as the harness counts: the bytes alone, and the pieces of
    re.split(r"\\s+", document). Every token is scored, so a result counts all of them."""
    docs = [
        "Hello wörld,  this is\ttext.",
        "",  # blank rows are not documents
        "   ",
        "日本語のテキスト と 絵文字 🙂!",
        "no\u00a0break space and a-hyphenated word",  # U+00A0 separates words for str.split()
        "  leading and trailing spaces  ",
    ]
    kept = [d for d in docs if d.strip()]
    documents = datasets.Dataset.from_dict({"text": docs})
    stream = token_stream(documents, "text", tokenizer)
    assert (
        stream.documents == 4 and stream.ids[0] == tokenizer.eos_token_id and stream.nbytes[0] == stream.words[0] == 0
    )
    assert stream.nbytes.sum() == sum(len(d.encode()) + 1 for d in kept) == 28 + 44 + 37 + 31 + 4
    assert stream.words.sum() == sum(len(d.split()) + 1 for d in kept) == (5 + 4 + 6 + 4) + 4
    assert stream.words[1] == 1 and docs[0].startswith(tokenizer.decode(stream.ids[1:2].tolist()))

    context = min(CONTEXT, len(stream.ids) - 1)
    result = score_dict(model, stream, Protocol(context, 1))
    assert (result["tokens"], result["bytes"], result["words"]) == (len(stream.ids) - 1, 144, 23)
    total_nll = result["mean_nll"] * result["tokens"]
    assert result["bits_per_byte"] == pytest.approx(total_nll / math.log(2) / result["bytes"], rel=1e-12)
    assert result["byte_perplexity"] == pytest.approx(math.exp(total_nll / result["bytes"]), rel=1e-12)
    assert result["word_perplexity"] == pytest.approx(math.exp(total_nll / result["words"]), rel=1e-12)

    alone = token_stream(documents, "text", tokenizer, by_document=True)
    pieces = [len(re.split(r"\s+", d)) for d in kept]
    assert pieces == [5, 4, 6, 6]  # the last document's leading and trailing spaces are a piece each
    assert alone.nbytes.sum() == sum(len(d.encode()) for d in kept) and alone.words.sum() == sum(pieces)
    result = score_dict(model, alone, Protocol(CONTEXT, CONTEXT, by_document=True))
    assert (result["tokens"], result["bytes"], result["words"]) == (len(alone.ids) - 5, 140, 21)

    rewritten = token_stream(documents, "text", tokenizer, by_document=True, detokenize=str.upper)
    firsts = rewritten.starts
    assert rewritten.nbytes[firsts].tolist() == [len(d.encode()) for d in kept] == [28, 44, 37, 31]
    assert rewritten.words[firsts].tolist() == pieces and rewritten.words.sum() == sum(pieces)
    assert tokenizer.decode(rewritten.ids[firsts[0] : rewritten.ends()[0]].tolist()) == docs[0].upper()


def test_word_starts_are_counted_in_the_token_holding_the_words_first_byte():
    """Token byte lengths given by hand: a word split over tokens counts once, in its first token; a
    two-byte character split over two tokens is found by its byte offset."""
    #  "  My sister" as "  " "My" " " "sis" "ter"
    np.testing.assert_array_equal(word_starts("  My sister", np.array([2, 2, 1, 3, 3])), [0, 1, 0, 1, 0])
    # "é b": é is two bytes, each its own token; then " " and "b"
    np.testing.assert_array_equal(word_starts("é b", np.array([1, 1, 1, 1])), [1, 0, 0, 1])
    # " ab" as " a" "b": the word begins inside the first token, after its space
    np.testing.assert_array_equal(word_starts(" ab", np.array([2, 1])), [1, 0])
    # with edges (the harness's count): " ab " as " a" "b ": an empty piece before and one after the words
    np.testing.assert_array_equal(word_starts(" ab ", np.array([2, 2]), edges=True), [2, 1])
    assert len(re.split(r"\s+", " ab ")) == 3


def test_the_metric_sums_bytes_and_words_across_batches():
    """Many add_batch calls = one compute call = the formulas by hand; training's two-field form still works."""
    import evaluate

    nll = [12.5, 3.25, 40.0, 0.5, 7.75]
    tokens, nbytes, words = [10, 3, 31, 1, 8], [41, 9, 120, 2, 30], [9, 2, 25, 0, 6]
    batched = evaluate.load(str(METRIC_PATH), "text", keep_in_memory=True)
    for at in range(0, 5, 2):
        batched.add_batch(
            nll=nll[at : at + 2], tokens=tokens[at : at + 2], bytes=nbytes[at : at + 2], words=words[at : at + 2]
        )
    batched = batched.compute()
    at_once = evaluate.load(str(METRIC_PATH), "text", keep_in_memory=True).compute(
        nll=nll, tokens=tokens, bytes=nbytes, words=words
    )
    assert batched == at_once
    total = sum(nll)
    assert batched["perplexity"] == pytest.approx(math.exp(total / sum(tokens)), rel=1e-12)
    assert batched["bits_per_byte"] == pytest.approx(total / math.log(2) / sum(nbytes), rel=1e-12)
    assert batched["byte_perplexity"] == pytest.approx(math.exp(total / sum(nbytes)), rel=1e-12)
    assert batched["word_perplexity"] == pytest.approx(math.exp(total / sum(words)), rel=1e-12)
    assert (batched["tokens"], batched["bytes"], batched["words"]) == (53, 202, 42)

    plain = evaluate.load(str(METRIC_PATH), keep_in_memory=True).compute(nll=nll, tokens=tokens)
    assert set(plain) == {"perplexity", "mean_nll", "tokens"} and plain["perplexity"] == batched["perplexity"]


def _metric_process(rank: int, cache: str, queue) -> None:
    import evaluate

    metric = evaluate.load(str(METRIC_PATH), "text", num_process=2, process_id=rank, experiment_id="t", cache_dir=cache)
    shards = [([1.5, 2.0], [1, 2], [3, 4], [1, 0]), ([30.0], [20], [70], [12])]
    nll, tokens, nbytes, words = shards[rank]
    metric.add_batch(nll=nll, tokens=tokens, bytes=nbytes, words=words)
    queue.put((rank, metric.compute()))


@pytest.mark.slow
def test_the_metric_aggregates_across_processes(tmp_path):
    """Two processes, each with its own shard, as under torchrun: process 0 returns the metric of the union."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_metric_process, args=(rank, str(tmp_path), queue)) for rank in range(2)]
    for w in workers:
        w.start()
    answers = dict(queue.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    assert answers[1] is None
    assert answers[0]["tokens"] == 23 and answers[0]["bytes"] == 77 and answers[0]["words"] == 13
    assert answers[0]["perplexity"] == pytest.approx(math.exp(33.5 / 23), rel=1e-12)


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model, corpus_dir):
    """A store with adapters 'alpha' and 'beta' trained by `gpt2-adapt train`, and alpha's recipe."""
    root = tmp_path_factory.mktemp("eval-trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT2_ADAPT_CACHE", str(root / "cache"))
        mp.chdir(root)
        for name, learning_rate, steps in (("alpha", 1e-2, 10), ("beta", 3e-2, 5)):
            # fp32: `eval` scores in fp32 by default, and reproduces an fp32 training's figures exactly
            recipe = tiny_recipe(
                tiny_model,
                corpus_dir,
                name,
                training={"max_steps": steps, "learning_rate": learning_rate, "precision": "fp32"},
            )
            (root / f"{name}.toml").write_text(tomli_w.dumps(recipe))
            result = run_cli("train", root / f"{name}.toml", "--store", root / "store")
            assert result.exit_code == 0, result.output
    return SimpleNamespace(store=root / "store", recipe=root / "alpha.toml")


def test_eval_of_a_recipe_reproduces_trainings_figures(trained, corpus_dir):
    """`eval --recipe R --adapter NAME` and `eval --files <the recipe's eval file>`: the base row is
    metrics.json's base perplexity, the adapter row its adapted perplexity, every token of the evaluation
    text (the partial last window included), same protocol; --stride equal to the block size changes
    nothing, and a smaller stride does change the figure."""
    metrics = json.loads((trained.store / "alpha" / "metrics.json").read_text())
    base, alpha = results_of("eval", "--recipe", trained.recipe, "--adapter", "alpha", "--store", trained.store)
    files = results_of(
        "eval", "--files", corpus_dir / "valid.txt", "--adapter", "alpha", "--context", 32, "--store", trained.store
    )

    assert (base["adapter"], alpha["adapter"]) == (None, "alpha")
    assert base["protocol"] == alpha["protocol"] == files[1]["protocol"] == metrics["protocol"]
    assert metrics["protocol"]["context"] == metrics["protocol"]["stride"] == 32
    stream = token_stream(
        datasets.Dataset.from_dict({"text": (corpus_dir / "valid.txt").read_text().splitlines()}),
        "text",
        AutoTokenizer.from_pretrained(alpha["model"]),
    )
    assert (
        base["tokens"] == alpha["tokens"] == metrics["adapted"]["tokens"] == files[1]["tokens"] == len(stream.ids) - 1
    )
    assert (len(stream.ids) - 1) % 32  # a partial last window, scored
    for row, run_ in ((base, "base"), (alpha, "adapted")):
        assert row["perplexity"] == pytest.approx(metrics[run_]["perplexity"], rel=REL)
        assert row["bits_per_byte"] == pytest.approx(metrics[run_]["bits_per_byte"], rel=REL)
    assert [r["perplexity"] for r in files] == pytest.approx([base["perplexity"], alpha["perplexity"]], rel=1e-12)
    assert alpha["perplexity"] < base["perplexity"]
    for key in ("model", "dataset", "bits_per_byte", "byte_perplexity", "word_perplexity", "bytes", "words"):
        assert key in alpha
    assert alpha["bytes"] > alpha["tokens"] and alpha["words"] > 0

    same = results_of(
        "eval", "--recipe", trained.recipe, "--adapter", "alpha", "--stride", 32, "--store", trained.store
    )
    assert [r["perplexity"] for r in same] == pytest.approx([base["perplexity"], alpha["perplexity"]], rel=1e-12)
    sliding = results_of(
        "eval", "--recipe", trained.recipe, "--adapter", "alpha", "--stride", 8, "--store", trained.store
    )
    assert {k: sliding[1]["protocol"][k] for k in ("kind", "context", "stride")} == {
        "kind": "sliding",
        "context": 32,
        "stride": 8,
    }
    assert sliding[1]["tokens"] == alpha["tokens"]  # the same tokens, each with more context
    assert sliding[1]["perplexity"] != pytest.approx(alpha["perplexity"], rel=1e-4)


def test_matrix_of_two_adapters_on_two_texts(trained, tiny_model, corpus_dir, tmp_path):
    """Two adapters x (a text file, a saved dataset's test split): the base row and both adapter rows, in
    order, as JSON, CSV and a heatmap; each cell equals the same pair scored alone, and the base row equals
    the plain model scored without peft."""
    lines = (corpus_dir / "train.txt").read_text().splitlines()
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": lines[:50]}),
            "test": datasets.Dataset.from_dict({"text": lines[-120:]}),
        }
    ).save_to_disk(tmp_path / "saved")
    valid = str(corpus_dir / "valid.txt")
    args = [
        "eval",
        "--adapter",
        "alpha",
        "--adapter",
        "beta",
        "--files",
        valid,
        "--dataset",
        tmp_path / "saved",
        "--store",
        trained.store,
        "--context",
        48,
        "--stride",
        24,
    ]

    results = results_of(*args, "--csv", tmp_path / "out" / "matrix.csv")

    texts = [f"{tmp_path / 'saved'} [test]", valid]  # the recipe's text, then datasets, then files
    assert [(r["adapter"], r["dataset"]) for r in results] == [(a, t) for a in (None, "alpha", "beta") for t in texts]
    by_cell = {(r["adapter"], r["dataset"]): r for r in results}
    for text in texts:
        values = [by_cell[a, text]["perplexity"] for a in (None, "alpha", "beta")]
        assert len({round(v, 6) for v in values}) == 3  # the adapters really were switched
    alone = results_of(
        "eval", "--adapter", "beta", "--files", valid, "--store", trained.store, "--context", 48, "--stride", 24
    )
    assert alone[1]["perplexity"] == pytest.approx(by_cell["beta", valid]["perplexity"], rel=1e-9)
    plain = results_of("eval", "--model", tiny_model, "--dataset", tmp_path / "saved", "--context", 48, "--stride", 24)
    assert plain[0]["adapter"] is None and plain[0]["tokens"] == by_cell[None, texts[0]]["tokens"]
    assert plain[0]["perplexity"] == pytest.approx(by_cell[None, texts[0]]["perplexity"], rel=1e-9)

    rows = (tmp_path / "out" / "matrix.csv").read_text().splitlines()
    assert len(rows) == 7 and rows[0].startswith(
        "model,adapter,dataset,kind,context,stride,by_document,detokenize,perplexity"
    )
    assert rows[4].split(",")[1] == "alpha" and f"{by_cell['alpha', valid]['perplexity']}" in rows[4]

    png = (tmp_path / "out" / "matrix.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    inches = figure_inches(3, 2)
    assert (width, height) == (round(inches[0] * HEATMAP_DPI), round(inches[1] * HEATMAP_DPI))

    text = run_cli(*args)
    assert text.exit_code == 0
    assert "windows of 48, stride 24 over the documents as one stream" in text.stdout
    assert text.stdout.count("alpha") == 3  # two lines of the long table and one row of the matrix

    # An earlier output of eval is replaced; a file of the user's only with --overwrite.
    again = run_cli(*args, "--csv", tmp_path / "out" / "matrix.csv")
    assert again.exit_code == 0 and (tmp_path / "out" / "matrix.csv").read_text().splitlines()[0] == rows[0]
    mine = tmp_path / "mine.csv"
    mine.write_text("my,own\n")
    refused = run_cli(*args, "--csv", mine)
    assert refused.exit_code == 2 and mine.read_text() == "my,own\n" and "--overwrite" in refused.stderr
    replaced = run_cli(*args, "--csv", mine, "--overwrite")
    assert replaced.exit_code == 0 and mine.read_text().startswith("model,adapter,dataset")


def test_python_evaluate_scores_a_mix_as_eval_does(trained, corpus_dir):
    """toolkit.evaluate(adapters, mix=...) scores the base, the adapters, then the mix, as `eval --mix` does;
    the mix row is the mix that toolkit.mix builds, scored in memory; a model in memory is scored as it runs
    (the base alone after use(model, None)) and left running as it was."""
    import toolkit
    from toolkit.errors import ToolkitError
    from toolkit.modeling.switching import active_adapter

    valid = str(corpus_dir / "valid.txt")
    rows = toolkit.evaluate(["alpha"], mix={"alpha": 0.5, "beta": 0.5}, files=[valid], store=trained.store, context=48)
    assert [r.adapter for r in rows] == [None, "alpha", "mix alpha=0.5,beta=0.5"]
    assert len({round(r.score.perplexity, 6) for r in rows}) == 3
    cli = results_of(
        "eval", "--adapter", "alpha", "--mix", "alpha=0.5,beta=0.5", "--files", valid, "--store", trained.store,
        "--context", 48,
    )  # fmt: skip
    assert [r["adapter"] for r in cli] == [r.adapter for r in rows]
    assert [r["perplexity"] for r in cli] == pytest.approx([r.score.perplexity for r in rows], rel=1e-9)

    model, tokenizer = toolkit.load(["alpha", "beta"], store=trained.store)
    mixed = toolkit.mix(model, "alpha=0.5,beta=0.5")
    [row] = toolkit.evaluate(model, tokenizer=tokenizer, files=[valid], context=48)
    assert row.adapter == "mix alpha=0.5,beta=0.5" and active_adapter(model) == mixed
    assert row.score.perplexity == pytest.approx(rows[2].score.perplexity, rel=1e-9)
    toolkit.use(model, None)
    [row] = toolkit.evaluate(model, tokenizer=tokenizer, files=[valid], context=48)
    assert row.adapter is None and active_adapter(model) is None
    assert row.score.perplexity == pytest.approx(rows[0].score.perplexity, rel=1e-9)
    with pytest.raises(ToolkitError, match="toolkit.mix"):
        toolkit.evaluate(model, tokenizer=tokenizer, mix="alpha=1", files=[valid])


def test_int8_and_bf16_bases_run_on_cpu(tiny_model, corpus_dir):
    """An 8-bit base (bitsandbytes) and a bf16 base score the same tokens close to the fp32 figure."""
    common = ["eval", "--model", tiny_model, "--files", corpus_dir / "valid.txt", "--max-tokens", 600]
    [fp32] = results_of(*common)
    [int8] = results_of(*common, "--int8")
    [bf16] = results_of(*common, "--precision", "bf16")
    assert fp32["tokens"] == int8["tokens"] == bf16["tokens"] == 600
    assert (fp32["precision"], int8["precision"], bf16["precision"]) == ("fp32", "int8", "bf16")
    for other in (int8, bf16):
        assert other["perplexity"] == pytest.approx(fp32["perplexity"], rel=0.02)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert 0.5 * model.config.vocab_size < fp32["perplexity"] < 2 * model.config.vocab_size  # random weights


# ---------------------------------------------------------------- bad input


@pytest.fixture
def not_gpt2(tmp_path, tokenizer) -> Path:
    """A complete causal-LM folder (a tiny Llama with the same tokenizer) that is not GPT-2."""
    folder = tmp_path / "llama"
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def empty_test_split(tmp_path) -> Path:
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["some text"]}),
            "test": datasets.Dataset.from_dict({"text": ["gone"]}).filter(lambda row: False),  # saved and loaded empty
        }
    ).save_to_disk(tmp_path / "empty")
    return tmp_path / "empty"


@pytest.mark.parametrize(
    "args, expected",
    [
        (lambda c, m, s: ["--adapter", "nope", "--files", c / "valid.txt", "--store", s], ["no adapter named 'nope'"]),
        (
            lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--text-column", "body"],
            ["--text-column", "'body'"],
        ),
        (lambda c, m, s: ["--model", m, "--dataset", "EMPTY"], ["'test' split", "has no rows"]),
        (
            lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--context", 32, "--stride", 40],
            ["--stride", "40"],
        ),
        (lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--stride", 65], ["--stride", "65"]),
        (lambda c, m, s: ["--model", "LLAMA", "--files", c / "valid.txt"], ["'llama' model", "GPT-2"]),
        (lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--context", 128], ["--context", "64 tokens"]),
        (lambda c, m, s: ["--model", m, "--files", c / "nothing-*.txt"], ["--files", "matches no file"]),
        (lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--max-tokens", 0], ["--max-tokens"]),
        (lambda c, m, s: ["--files", c / "valid.txt"], ["--adapter", "--model"]),
        (lambda c, m, s: ["--model", m], ["--recipe", "--dataset", "--files"]),
        (lambda c, m, s: ["--model", m, "--dataset", "EMPTY", "--split", "dev"], ["--split", "'dev'", "train, test"]),
        (lambda c, m, s: ["--model", "./no-such-model", "--files", c / "valid.txt"], ["--model", "no such folder"]),
        (lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--limit", 0], ["--limit", "at least 1"]),
        (
            lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--detokenize", "moses"],
            ["--detokenize", "'moses'", "wikitext"],
        ),
        (
            lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--detokenize", "wikitext", "--max-tokens", 50],
            ["--max-tokens", "--detokenize", "--limit"],
        ),
        (
            lambda c, m, s: [
                "--model",
                m,
                "--files",
                c / "valid.txt",
                "--by-document",
                "--context",
                32,
                "--stride",
                33,
            ],
            ["--stride", "33", "32 tokens"],
        ),
        (
            lambda c, m, s: ["--model", m, "--task", "t", "--include-path", c / "no-such-folder"],
            ["--include-path", "not a folder"],
        ),
        (lambda c, m, s: ["--model", m, "--files", c / "valid.txt", "--include-path", c], ["--include-path", "--task"]),
        (
            lambda c, m, s: ["--mix", "alpha=1,nope=2", "--files", c / "valid.txt", "--store", s],
            ["'nope'", "alpha, beta"],
        ),
        (
            lambda c, m, s: ["--mix", "alpha=1,beta=x", "--files", c / "valid.txt", "--store", s],
            ["--mix", "'beta'", "not a finite number"],
        ),
    ],
    ids=[
        "unknown-adapter",
        "no-text-column",
        "empty-split",
        "stride-over-context",
        "stride-over-model-context",
        "not-gpt2",
        "context-over-model",
        "no-files",
        "max-tokens-0",
        "no-model",
        "no-text",
        "unknown-split",
        "missing-model-folder",
        "limit-0",
        "unknown-detokenizer",
        "max-tokens-with-detokenize",
        "by-document-stride-over-context",
        "include-path-not-a-folder",
        "include-path-without-task",
        "mix-of-an-unknown-adapter",
        "mix-weight-not-a-number",
    ],
)
def test_bad_input_is_one_error_line_and_exit_code_2(
    args, expected, corpus_dir, tiny_model, trained, not_gpt2, empty_test_split, tmp_path
):
    named = {"LLAMA": not_gpt2, "EMPTY": empty_test_split}
    argv = [named.get(a, a) if isinstance(a, str) else a for a in args(corpus_dir, tiny_model, trained.store)]
    result = run_cli("eval", *argv)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for part in expected:
        assert part in errors[0], errors[0]
    assert result.stdout == ""


def test_an_evaluation_text_shorter_than_a_block_is_kept_whole(tiny_model, corpus_dir, tmp_path, tokenizer):
    """Training no longer refuses an evaluation text shorter than one block: every token of it is scored."""
    from toolkit.config.recipe import DataSpec
    from toolkit.data.packing import prepare_data

    (tmp_path / "short.txt").write_text("The cat sees the river.\n")
    spec = DataSpec(
        train_files=[str(corpus_dir / "train.txt")], eval_files=[str(tmp_path / "short.txt")], block_size=32
    )
    data = prepare_data(spec, tokenizer, cache=tmp_path / "cache")
    assert data.stats["eval"] == {"documents": 1, "tokens": len(tokenizer("The cat sees the river.")["input_ids"]) + 1}
    assert data.eval.tokens == data.stats["eval"]["tokens"] < 32


def _torchrun(*args: str):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "toolkit.cli", "-q", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )


@pytest.mark.slow
@pytest.mark.parametrize("by_document", [False, True], ids=["stream", "by-document"])
def test_eval_under_torchrun_shares_the_windows_and_reports_once(tiny_model, corpus_dir, by_document):
    """Two processes score half of the windows each: the same figures as one process (float rounding), one
    JSON document printed (by the first process)."""
    args = [
        "eval",
        "--model",
        str(tiny_model),
        "--files",
        str(corpus_dir / "valid.txt"),
        "--context",
        "32",
        *(["--by-document"] if by_document else []),
    ]
    [alone] = results_of(*args)
    done = _torchrun(*args, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    [shared] = json.loads(done.stdout)
    assert (shared["tokens"], shared["bytes"], shared["words"]) == (alone["tokens"], alone["bytes"], alone["words"])
    for metric in ("perplexity", "bits_per_byte", "word_perplexity"):
        assert shared[metric] == pytest.approx(alone[metric], rel=1e-9)
