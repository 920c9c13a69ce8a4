"""Training data: packing with exact token accounting, the packed-data cache and its fingerprint, how the
evaluation share is found or carved, and every kind of source with its errors. Real `datasets` and
tokenizers throughout, on the tiny GPT-2's 300-token BPE."""

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, GPT2TokenizerFast

import toolkit.data.documents
import toolkit.data.packing
from toolkit.config.recipe import DataSpec
from toolkit.data.documents import open_source
from toolkit.data.packing import BlockDataset, pack, prepare_data
from toolkit.data.streams import TokenStream, token_stream
from toolkit.errors import ToolkitError
from toolkit.sources import builtin

DOCS = [
    "The cat sees the river.",
    "",
    "A dog likes an apple. The bird hears the moon.",
    "   ",
    "\t",
    "  My sister paints a green door.",  # leading spaces are part of the document, not stripped
    "The old man follows the small house.",
    "",
    "A child finds a red ball. The cat likes the moon. A dog paints the river.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def expected_stream(docs, tokenizer) -> tuple[np.ndarray, list[int]]:
    """The stream as the rules define it, one document at a time: tokens + EOS per non-blank document.
    Also returns the stream offset of each document's EOS."""
    stream, eos_at = [], []
    for doc in docs:
        if not doc.strip():
            continue
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        eos_at.append(len(stream) - 1)
    return np.asarray(stream), eos_at


def text_dataset(tmp_path: Path, docs) -> datasets.Dataset:
    """Documents written one per line and read back the way the toolkit reads a .txt file."""
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(docs) + "\n")
    return datasets.load_dataset("text", data_files=str(path), split="train")


def lines(n: int, tag: str = "doc") -> list[str]:
    """n distinct documents of the tiny grammar's words, each naming its own number."""
    return [f"{tag} {i}: the cat sees the river and a dog likes an apple." for i in range(n)]


def write_lines(path, docs) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(docs) + "\n")
    return Path(path)


def error_of(spec: DataSpec, tokenizer) -> str:
    with pytest.raises(ToolkitError) as info:
        prepare_data(spec, tokenizer)
    return str(info.value)


def forbid_packing(monkeypatch):
    """From here on, prepare_data must be served from the cache: packing anything fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("pack() was called: the packed cache was not reused")

    monkeypatch.setattr(toolkit.data.packing, "pack", refuse)


# ---------------------------------------------------------------- packing


def test_pack_is_the_eos_separated_stream_cut_into_blocks(tmp_path, tokenizer):
    """Blocks are exactly the per-document stream (EOS after each document, blank lines skipped) cut
    into rows of block_size; only the final remainder is dropped and the stats count it all."""
    dataset = text_dataset(tmp_path, DOCS)
    assert len(dataset) == len(DOCS)  # the blank rows do reach pack()
    stream, eos_at = expected_stream(DOCS, tokenizer)
    block_size = 10
    assert len(stream) % block_size != 0  # this case has a remainder to drop

    blocks, stats = pack(dataset, "text", tokenizer, block_size)

    n_blocks = len(stream) // block_size
    assert blocks.shape == (n_blocks, block_size)
    np.testing.assert_array_equal(blocks.reshape(-1), stream[: n_blocks * block_size])
    assert stats == {
        "documents": 5,  # 9 rows, 4 of them blank or whitespace-only
        "tokens": len(stream),
        "blocks": n_blocks,
        "dropped": len(stream) - n_blocks * block_size,
    }
    assert 0 < stats["dropped"] < block_size
    # EOS sits right after each document and nowhere else: no padding, no separator for blank lines.
    flat = blocks.reshape(-1)
    kept_eos = [i for i in eos_at if i < len(flat)]
    assert np.flatnonzero(flat == tokenizer.eos_token_id).tolist() == kept_eos
    assert tokenizer.pad_token_id in (None, tokenizer.eos_token_id)


def test_pack_of_an_exact_multiple_drops_nothing(tokenizer):
    """A stream that is a whole number of blocks keeps every token, the last EOS included."""
    doc = "The cat sees the river."
    piece = len(tokenizer(doc, add_special_tokens=False)["input_ids"]) + 1
    docs = [doc, "", doc, "  ", doc, doc]
    dataset = datasets.Dataset.from_dict({"text": docs})

    blocks, stats = pack(dataset, "text", tokenizer, 2 * piece)
    assert stats == {"documents": 4, "tokens": 4 * piece, "blocks": 2, "dropped": 0}
    np.testing.assert_array_equal(blocks.reshape(-1), expected_stream(docs, tokenizer)[0])
    assert blocks[-1, -1] == tokenizer.eos_token_id

    one_per_block, stats = pack(dataset, "text", tokenizer, piece)  # each block is one document + EOS
    assert stats["blocks"] == 4 and stats["dropped"] == 0
    assert (one_per_block[:, -1] == tokenizer.eos_token_id).all()
    assert (one_per_block[:, :-1] != tokenizer.eos_token_id).all()


def test_pack_blocks_cross_tokenizer_batches_without_losing_a_token(tokenizer, monkeypatch):
    """With 2 documents per tokenizer batch (one batch all blank), blocks still span batch boundaries
    and the result is identical to packing in one batch."""
    docs = ["The cat sees the river.", "A dog likes an apple.", "", "   ", "My sister paints a green door."]
    docs += ["The bird hears the moon. A child finds a red ball.", "The old man follows the small house."]
    dataset = datasets.Dataset.from_dict({"text": docs})
    block_size = 5
    one_batch, one_stats = pack(dataset, "text", tokenizer, block_size)

    monkeypatch.setattr(toolkit.data.documents, "TOKENIZE_BATCH", 2)
    blocks, stats = pack(dataset, "text", tokenizer, block_size)

    stream, _ = expected_stream(docs, tokenizer)
    np.testing.assert_array_equal(blocks.reshape(-1), stream[: stats["blocks"] * block_size])
    np.testing.assert_array_equal(blocks, one_batch)
    assert (
        stats
        == one_stats
        == {
            "documents": 5,
            "tokens": len(stream),
            "blocks": len(stream) // block_size,
            "dropped": len(stream) % block_size,
        }
    )
    # Where each batch of 2 rows ends in the stream; some of those ends fall inside a block.
    batch_ends = [len(expected_stream(docs[: i + 2], tokenizer)[0]) for i in range(0, len(docs) - 2, 2)]
    assert any(end % block_size and end < stats["blocks"] * block_size for end in batch_ends)


# ---------------------------------------------------------------- prepare_data


def test_prepare_data_gives_block_datasets_of_the_packed_files(corpus_dir, tokenizer):
    """train_files + eval_files: the training file packed into blocks, whose items are LongTensor inputs
    with labels equal to them (the model shifts); the evaluation file as the token stream the scorer reads,
    its counts in the same terms."""
    train, valid = str(corpus_dir / "train.txt"), str(corpus_dir / "valid.txt")
    spec = DataSpec(train_files=[train], eval_files=[valid], block_size=32)
    data = prepare_data(spec, tokenizer)

    documents = datasets.Dataset.from_dict({"text": (corpus_dir / "train.txt").read_text().splitlines()})
    expected, stats = pack(documents, "text", tokenizer, 32)
    assert isinstance(data.train, BlockDataset)
    assert len(data.train) == stats["blocks"] == data.stats["train"]["blocks"] > 0
    assert data.stats["train"] == stats
    assert data.train.block_size == 32 and data.train.tokens == 32 * len(data.train)
    np.testing.assert_array_equal(np.asarray(data.train.blocks), expected)

    documents = datasets.Dataset.from_dict({"text": (corpus_dir / "valid.txt").read_text().splitlines()})
    stream = token_stream(documents, "text", tokenizer)
    assert isinstance(data.eval, TokenStream)
    np.testing.assert_array_equal(data.eval.ids, stream.ids)
    np.testing.assert_array_equal(data.eval.nbytes, stream.nbytes)
    assert data.stats["eval"] == {
        "documents": stream.documents,
        "tokens": len(stream.ids) - 1,
    }  # all but the leading EOS
    _, eval_stats = pack(documents, "text", tokenizer, 32)
    assert data.stats["eval"]["tokens"] == eval_stats["tokens"]  # every token that packing the text would give

    item = data.train[len(data.train) - 1]
    assert set(item) == {"input_ids", "labels"}
    assert item["input_ids"].dtype == torch.int64 and item["input_ids"].shape == (32,)
    assert torch.equal(item["labels"], item["input_ids"])
    loader = torch.utils.data.DataLoader(data.train, batch_size=4)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 32) and batch["input_ids"].dtype == torch.int64


# ---------------------------------------------------------------- the packed cache and its fingerprint


def packed_files(fingerprint: str) -> dict[str, tuple[int, int]]:
    folder = Path(os.environ["GPT2_ADAPT_CACHE"]) / "packed" / fingerprint
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_second_prepare_reuses_the_cache(tmp_path, tokenizer, monkeypatch):
    """Same spec, same tokenizer: same fingerprint, nothing packed again, no cache file rewritten."""
    spec = DataSpec(train_files=[str(write_lines(tmp_path / "t.txt", lines(60)))], block_size=16)
    first = prepare_data(spec, tokenizer)
    files = packed_files(first.fingerprint)
    assert set(files) == {"train.npy", "eval.npz", "meta.json"}

    forbid_packing(monkeypatch)
    second = prepare_data(spec, tokenizer)
    assert second.fingerprint == first.fingerprint
    assert second.stats == first.stats
    np.testing.assert_array_equal(second.train.blocks, first.train.blocks)
    np.testing.assert_array_equal(second.eval.ids, first.eval.ids)
    assert packed_files(first.fingerprint) == files


def test_the_same_tokenizer_from_another_folder_hits_the_cache(tmp_path, tokenizer, monkeypatch):
    """The fingerprint hashes the tokenizer's definition, not the Python object or its folder (the trap
    of hashing a tokenizer through datasets' .map): a save/load round trip still finds the cache."""
    spec = DataSpec(train_files=[str(write_lines(tmp_path / "t.txt", lines(60)))], block_size=16)
    first = prepare_data(spec, tokenizer)

    tokenizer.save_pretrained(tmp_path / "elsewhere")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "elsewhere")
    assert reloaded is not tokenizer
    forbid_packing(monkeypatch)
    assert prepare_data(spec, reloaded).fingerprint == first.fingerprint


def other_vocabulary(path: Path) -> GPT2TokenizerFast:
    """A GPT-2 style tokenizer trained on other text: same kind, same EOS id, different merges."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280, special_tokens=[builtin.EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train([str(path)], trainer)
    return GPT2TokenizerFast(tokenizer_object=bpe, bos_token=builtin.EOS, eos_token=builtin.EOS, unk_token=builtin.EOS)


def test_whatever_decides_the_blocks_changes_the_fingerprint(tmp_path, tiny_model, tokenizer):
    """Another tokenizer (an added token, another vocabulary), block size, eval_fraction, text column or
    file content each give a new fingerprint, and the blocks really are packed again."""
    train = write_lines(tmp_path / "t.txt", lines(60))
    spec = DataSpec(train_files=[str(train)], block_size=16)
    base = prepare_data(spec, tokenizer).fingerprint

    added = AutoTokenizer.from_pretrained(tiny_model)
    added.add_tokens(["riverbank"])
    other = other_vocabulary(write_lines(tmp_path / "other-text.txt", ["zebra quartz jumps " * 5] * 20))
    assert other.eos_token_id == tokenizer.eos_token_id
    seen = {
        "base": base,
        "added token": prepare_data(spec, added).fingerprint,
        "other vocabulary": prepare_data(spec, other).fingerprint,
        "block_size": prepare_data(replace(spec, block_size=17), tokenizer).fingerprint,
        "eval_fraction": prepare_data(replace(spec, eval_fraction=0.2), tokenizer).fingerprint,
    }
    write_lines(train, lines(60, tag="changed"))
    changed = prepare_data(spec, tokenizer)
    seen["content"] = changed.fingerprint
    assert len(set(seen.values())) == len(seen), seen
    assert len(list((Path(os.environ["GPT2_ADAPT_CACHE"]) / "packed").iterdir())) == len(seen)
    decoded = tokenizer.decode(np.concatenate([changed.train.blocks.reshape(-1), changed.eval.ids]))
    assert "changed" in decoded and "doc " not in decoded


def test_another_train_split_is_packed_again(tokenizer):
    """Training on split 'b' after split 'a' of the same folder must not return 'a's blocks."""
    datasets.DatasetDict(
        {
            "a": datasets.Dataset.from_dict({"text": lines(40, tag="alpha")}),
            "b": datasets.Dataset.from_dict({"text": lines(40, tag="beta")}),
            "validation": datasets.Dataset.from_dict({"text": lines(10, tag="gamma")}),
        }
    ).save_to_disk("splits")
    on_a = prepare_data(DataSpec(dataset="splits", train_split="a", block_size=16), tokenizer)
    on_b = prepare_data(DataSpec(dataset="splits", train_split="b", block_size=16), tokenizer)
    assert "alpha" in tokenizer.decode(on_a.train.blocks.reshape(-1))
    assert "beta" in tokenizer.decode(on_b.train.blocks.reshape(-1))
    assert on_b.fingerprint != on_a.fingerprint


def test_a_rewritten_file_with_the_same_mtime_is_read_afresh(tmp_path, tokenizer):
    """Content changes that keep the mtime (cp -p, rsync -t, tar, two writes within one clock tick) must
    still reach the blocks: the toolkit fingerprints the content, so it must also read the content."""
    train = write_lines(tmp_path / "t.txt", lines(40, tag="alpha"))
    mtime = train.stat().st_mtime_ns
    first = prepare_data(DataSpec(train_files=[str(train)], block_size=16), tokenizer)
    write_lines(train, lines(40, tag="beta"))
    os.utime(train, ns=(mtime, mtime))

    second = prepare_data(DataSpec(train_files=[str(train)], block_size=16), tokenizer)
    assert second.fingerprint != first.fingerprint  # holds today: the content is hashed
    text = tokenizer.decode(np.concatenate([second.train.blocks.reshape(-1), second.eval.ids]))
    assert "beta" in text and "alpha" not in text


def test_the_same_bytes_as_txt_and_csv_are_different_data(tokenizer):
    """A .txt reads the header line as a document, a .csv as column names: different blocks, so they
    need different fingerprints."""
    content = "text\n" + "\n".join(lines(40)) + "\n"
    Path("notes.txt").write_text(content)
    Path("notes.csv").write_text(content)
    as_txt = prepare_data(DataSpec(train_files=["notes.txt"], block_size=16), tokenizer)
    as_csv = prepare_data(DataSpec(train_files=["notes.csv"], block_size=16), tokenizer)
    assert as_txt.stats["train"]["documents"] + as_txt.stats["eval"]["documents"] == 41
    assert as_csv.stats["train"]["documents"] + as_csv.stats["eval"]["documents"] == 40
    assert as_csv.fingerprint != as_txt.fingerprint


# ---------------------------------------------------------------- the evaluation share


def test_train_files_alone_carve_a_fixed_disjoint_eval_share(tmp_path, tokenizer):
    """Without eval_files, eval_fraction of the documents is held out, the same ones every time, and no
    document is in both splits."""
    docs = lines(200)
    spec = DataSpec(train_files=[str(write_lines(tmp_path / "t.txt", docs))], block_size=16, eval_fraction=0.1)

    train_docs, eval_docs = open_source(spec).splits()
    assert len(eval_docs) == math.ceil(0.1 * len(docs))
    assert set(train_docs["text"]).isdisjoint(eval_docs["text"])
    assert sorted(list(train_docs["text"]) + list(eval_docs["text"])) == sorted(docs)

    first = prepare_data(spec, tokenizer, cache=tmp_path / "one")
    second = prepare_data(spec, tokenizer, cache=tmp_path / "two")  # packed again from scratch
    np.testing.assert_array_equal(first.eval.ids, second.eval.ids)
    np.testing.assert_array_equal(first.train.blocks, second.train.blocks)
    assert first.stats["eval"]["documents"] == len(eval_docs)
    assert first.stats["train"]["documents"] == len(train_docs)
    np.testing.assert_array_equal(first.eval.ids, token_stream(eval_docs, "text", tokenizer).ids)


def test_a_saved_dataset_dict_uses_its_train_and_validation_splits(tokenizer):
    """A save_to_disk folder with train and validation: both are used as they are, nothing carved."""
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": lines(50, tag="train")}),
            "validation": datasets.Dataset.from_dict({"text": lines(12, tag="valid")}),
        }
    ).save_to_disk("saved")
    data = prepare_data(DataSpec(dataset="saved", block_size=16), tokenizer)
    assert data.stats["train"]["documents"] == 50
    assert data.stats["eval"]["documents"] == 12
    assert "train" not in tokenizer.decode(data.eval.ids)


def test_a_saved_dataset_with_only_train_carves_the_eval_share(tokenizer):
    """The default eval_split missing means carve; so does a bare Dataset folder (taken as train)."""
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines(40)})}).save_to_disk("only-train")
    datasets.Dataset.from_dict({"text": lines(40)}).save_to_disk("bare")
    for folder in ("only-train", "bare"):
        stats = prepare_data(DataSpec(dataset=folder, block_size=16, eval_fraction=0.25), tokenizer).stats
        assert stats["eval"]["documents"] == 10 and stats["train"]["documents"] == 30


def test_a_named_eval_split_that_is_missing_is_an_error(tokenizer):
    """A non-default eval_split that the data lacks is refused, naming the key and the splits there are."""
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": lines(20)}),
            "dev": datasets.Dataset.from_dict({"text": lines(5)}),
        }
    ).save_to_disk("saved")
    message = error_of(DataSpec(dataset="saved", eval_split="test", block_size=16), tokenizer)
    assert "data.eval_split" in message and "'test'" in message
    assert "train, dev" in message or "dev, train" in message


# ---------------------------------------------------------------- sources


def test_globs_expand_to_the_same_data_as_the_listed_files(tokenizer):
    """`parts/*.txt` reads every matching file, sorted, exactly like listing them (same fingerprint)."""
    for name, tag in (("b.txt", "bee"), ("a.txt", "ant"), ("c.txt", "cow")):
        write_lines(Path("parts") / name, lines(20, tag=tag))
    write_lines(Path("parts") / "skip.md", ["not text data"])
    globbed = prepare_data(DataSpec(train_files=["parts/*.txt"], block_size=16), tokenizer)
    listed = DataSpec(train_files=["parts/a.txt", "parts/b.txt", "parts/c.txt"], block_size=16)
    listed = prepare_data(listed, tokenizer)
    assert globbed.stats["train"]["documents"] + globbed.stats["eval"]["documents"] == 60
    assert globbed.fingerprint == listed.fingerprint


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_jsonl_and_csv_files_with_a_text_column(kind, tokenizer):
    """Rows of a jsonl/csv file are documents of the named text column; other columns are ignored."""
    train, valid = lines(30, tag="train"), lines(6, tag="valid")
    for name, docs in (("train", train), ("valid", valid)):
        if kind == "jsonl":
            text = "\n".join(json.dumps({"id": i, "body": d}) for i, d in enumerate(docs)) + "\n"
        else:
            text = "id,body\n" + "".join(f'{i},"{d}"\n' for i, d in enumerate(docs))
        Path(f"{name}.{kind}").write_text(text)
    spec = DataSpec(train_files=[f"train.{kind}"], eval_files=[f"valid.{kind}"], text_column="body", block_size=16)
    data = prepare_data(spec, tokenizer)
    expected_train = pack(datasets.Dataset.from_dict({"body": train}), "body", tokenizer, 16)[0]
    np.testing.assert_array_equal(data.train.blocks, expected_train)
    assert data.stats["eval"]["documents"] == 6


def test_builtin_python_docs_gives_train_and_eval_blocks(tokenizer):
    """builtin:python-docs writes the pydoc topics into this test's cache and packs both splits."""
    data = prepare_data(DataSpec(dataset="builtin:python-docs", block_size=64), tokenizer)
    assert len(data.train) * data.train.block_size > len(data.eval.ids) > 0
    assert data.train[0]["input_ids"].shape == (64,)
    folder = Path(os.environ["GPT2_ADAPT_CACHE"]) / "builtin" / f"python-docs-{builtin.VERSION}"
    assert (folder / "train.txt").stat().st_size > 0 and (folder / "validation.txt").stat().st_size > 0


def txt(name: str, n: int) -> str:
    write_lines(name, lines(n))
    return name


def jsonl(name: str, rows: list[dict]) -> str:
    Path(name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


def empty_file(name: str) -> str:
    Path(name).write_text("")
    return name


def plain_folder(name: str) -> str:
    """A folder that exists but was not written by save_to_disk."""
    write_lines(Path(name) / "notes.txt", lines(5))
    return name


def empty_validation(name: str) -> str:
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": lines(10)}),
            "validation": datasets.Dataset.from_dict({"text": lines(1)}).filter(lambda row: False),
        }
    ).save_to_disk(name)
    return name


@pytest.mark.parametrize(
    "make_spec, expected",
    [
        (lambda: DataSpec(train_files=["missing.txt"]), ["data.train_files", "missing.txt"]),
        (lambda: DataSpec(train_files=["nowhere/*.txt"]), ["data.train_files", "nowhere/*.txt", "matches no file"]),
        (
            lambda: DataSpec(train_files=[txt("t.txt", 20)], eval_files=["gone.txt"]),
            ["data.eval_files", "gone.txt"],
        ),
        (lambda: DataSpec(train_files=[txt("notes.md", 20)]), ["data.train_files", "notes.md"]),
        (
            lambda: DataSpec(train_files=[txt("t.txt", 5), jsonl("r.jsonl", [{"text": "x"}])]),
            ["data.train_files", "mixes file kinds"],
        ),
        (
            lambda: DataSpec(train_files=[txt("t.txt", 5)], eval_files=[jsonl("v.jsonl", [{"text": "x"}])]),
            ["data.eval_files", "same kind"],
        ),
        (
            lambda: DataSpec(train_files=[jsonl("r.jsonl", [{"body": d, "n": 1} for d in lines(20)])]),
            ["data.text_column", "'text'", "body, n"],
        ),
        (
            lambda: DataSpec(train_files=[jsonl("r.jsonl", [{"body": d, "n": 1} for d in lines(20)])], text_column="n"),
            ["data.text_column", "rows 1 (a number), 2 (a number)", "no text in column 'n'"],
        ),
        (lambda: DataSpec(dataset=empty_validation("saved")), ["'validation' split has no rows"]),
        (lambda: DataSpec(train_files=[empty_file("empty.txt")]), ["data.train_files"]),
        (lambda: DataSpec(train_files=[txt("t.txt", 20)], block_size=4096), ["data.block_size=4096"]),
        (
            lambda: DataSpec(train_files=[write_lines("blank.txt", ["", "  ", "\t"] * 5).name]),
            ["blank.txt holds only blank lines"],
        ),
        (lambda: DataSpec(dataset="builtin:wikipedia"), ["data.dataset", "builtin:wikipedia", "builtin:python-docs"]),
        (lambda: DataSpec(dataset="./no-such-folder"), ["data.dataset", "no such folder"]),
        (lambda: DataSpec(dataset=plain_folder("plain")), ["data.dataset", "save_to_disk"]),
        (lambda: DataSpec(train_files=[txt("t.txt", 20)], train_split="main"), ["data.train_split"]),
    ],
    ids=[
        "missing-file",
        "empty-glob",
        "missing-eval-file",
        "unsupported-extension",
        "mixed-kinds",
        "eval-of-another-kind",
        "missing-text-column",
        "non-text-column",
        "empty-split",
        "empty-file",
        "too-short-for-a-block",
        "only-blank-lines",
        "unknown-builtin",
        "missing-dataset-folder",
        "folder-not-saved-by-datasets",
        "unknown-train-split",
    ],
)
def test_bad_sources_raise_a_toolkit_error_naming_the_key(make_spec, expected, tokenizer):
    """Every unusable source is a ToolkitError whose message names the recipe key (and what to fix)."""
    message = error_of(make_spec(), tokenizer)
    for part in expected:
        assert part in message, message
    assert not (Path(os.environ["GPT2_ADAPT_CACHE"]) / "packed").exists()  # nothing half-made is cached


def test_an_uncached_hub_dataset_fails_fast_offline(tokenizer):
    """HF_HUB_OFFLINE=1 and a hub id not in the local cache: a ToolkitError naming data.dataset at once,
    not after the libraries' retries."""
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    started = time.monotonic()
    message = error_of(DataSpec(dataset="someone/surely-not-cached-corpus", block_size=16), tokenizer)
    assert time.monotonic() - started < 10
    assert "data.dataset" in message and "someone/surely-not-cached-corpus" in message
