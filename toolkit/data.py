"""Training data: read documents, tokenize them, and pack them into blocks with no padding.

Each row of the text column is one document (a text file's lines are its rows); blank rows are skipped.
Every document is followed by EOS, the token stream is cut into blocks of `block_size` and only the final
remainder is dropped. Labels equal the inputs (the model shifts them), so EOS is learnt like any token.

The packed blocks are cached as .npy files under a fingerprint of everything that decides their content:
the data itself, the tokenizer's full definition, the block size and how evaluation is carved out.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from . import builtin, sources
from .cache import atomic_folder, cache_root
from .errors import ToolkitError, first_line
from .provenance import file_sha256, tokenizer_fingerprint
from .recipe import DataSpec

log = logging.getLogger(__name__)

# Bump when the packing rules change, so that caches written by older rules are never reused.
PACKING_VERSION = "1"
FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
CARVE_SEED = 0  # the held-out share must not move when the training seed does
TOKENIZE_BATCH = 1000
# Without --split, evaluation reads the first of these that the dataset has.
EVAL_SPLITS = ("test", "validation")


class Keys(NamedTuple):
    """What error messages call each input: a recipe's keys, or the options of `gpt2-adapt eval`."""

    data: str = "data"
    dataset: str = "data.dataset"
    config: str = "data.config"
    split: str = "data.eval_split"
    text_column: str = "data.text_column"
    files: str = "data.train_files"


RECIPE_KEYS = Keys()
OPTION_KEYS = Keys("--dataset", "--dataset", "--config", "--split", "--text-column", "--files")


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks, one training example each: {"input_ids", "labels"} of block_size tokens."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
        return {"input_ids": ids, "labels": ids}

    @property
    def block_size(self) -> int:
        return self.blocks.shape[1]

    @property
    def tokens(self) -> int:
        return self.blocks.size


@dataclass(frozen=True)
class PreparedData:
    train: BlockDataset
    eval: BlockDataset
    fingerprint: str  # of the packed result: equal fingerprints mean identical blocks
    stats: dict  # per split: documents, tokens, blocks, dropped (remainder tokens)


def prepare_data(spec: DataSpec, tokenizer, cache: Path | None = None) -> PreparedData:
    """Packed train and eval blocks for a recipe's data section, from the cache when it has them."""
    if not tokenizer.is_fast or tokenizer.eos_token_id is None:
        raise ToolkitError("model.name: the tokenizer must be a fast GPT-2 tokenizer with an EOS token")
    source = open_source(spec)
    key = _fingerprint(spec, tokenizer, source.fingerprint)
    folder = (cache or cache_root()) / "packed" / key
    if not (folder / "meta.json").is_file():
        train_docs, eval_docs = source.splits()
        packed = {
            split: pack(docs, spec.text_column, tokenizer, spec.block_size)
            for split, docs in (("train", train_docs), ("eval", eval_docs))
        }
        for split, (blocks, stats) in packed.items():
            if len(blocks) == 0:
                where = "data.dataset"
                if spec.train_files:
                    where = "data.eval_files" if split == "eval" and spec.eval_files else "data.train_files"
                raise ToolkitError(
                    f"{where}: the {split} text has {stats['tokens']} tokens, fewer than one block of "
                    f"data.block_size={spec.block_size}; add text or lower data.block_size"
                )
        with atomic_folder(folder) as tmp:
            for split, (blocks, _) in packed.items():
                np.save(tmp / f"{split}.npy", blocks)
            (tmp / "meta.json").write_text(json.dumps({s: stats for s, (_, stats) in packed.items()}, indent=2))
    else:
        log.info("packed data found in the cache: %s", folder)
    stats = json.loads((folder / "meta.json").read_text())
    return PreparedData(
        train=BlockDataset(np.load(folder / "train.npy", mmap_mode="r")),
        eval=BlockDataset(np.load(folder / "eval.npy", mmap_mode="r")),
        fingerprint=key,
        stats=stats,
    )


def pack(documents, text_column: str, tokenizer, block_size: int) -> tuple[np.ndarray, dict]:
    """Tokenize documents in batches, append EOS to each, and cut the stream into full blocks."""
    eos = tokenizer.eos_token_id
    pieces, documents_seen = [], 0
    for texts in document_batches(documents, text_column):
        encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)
        for ids in encoded["input_ids"]:
            pieces.append(np.asarray(ids + [eos], dtype=np.int32))
        documents_seen += len(texts)
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    n_blocks = len(stream) // block_size
    blocks = stream[: n_blocks * block_size].reshape(n_blocks, block_size)
    stats = {
        "documents": documents_seen,
        "tokens": int(len(stream)),
        "blocks": int(n_blocks),
        "dropped": int(len(stream) - n_blocks * block_size),
    }
    return blocks, stats


def document_batches(documents, text_column: str):
    """The documents' texts in batches of up to TOKENIZE_BATCH rows, blank rows (and non-strings) left out."""
    for batch in documents.select_columns([text_column]).iter(batch_size=TOKENIZE_BATCH):
        texts = [t for t in batch[text_column] if isinstance(t, str) and t.strip()]
        if texts:
            yield texts


def _fingerprint(spec: DataSpec, tokenizer, source_fingerprint: str) -> str:
    what_matters = {
        "packing": PACKING_VERSION,
        "source": source_fingerprint,
        "train_split": spec.train_split,
        "text_column": spec.text_column,
        "block_size": spec.block_size,
        "eval_fraction": spec.eval_fraction,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "eos": tokenizer.eos_token_id,
    }
    return hashlib.sha256(json.dumps(what_matters, sort_keys=True).encode()).hexdigest()[:32]


# ---------------------------------------------------------------- sources of documents


class _Source:
    """Documents for training and evaluation, and a fingerprint of them that is cheap to get."""

    def __init__(self, fingerprint: str, splits):
        self.fingerprint = fingerprint
        self.splits = splits  # () -> (train Dataset, eval Dataset)


def open_source(spec: DataSpec) -> _Source:
    if spec.train_files:
        train = expand_files(spec.train_files, "data.train_files")
        evals = expand_files(spec.eval_files, "data.eval_files") if spec.eval_files else []
        return _files_source(spec, train, evals)
    if builtin.is_builtin(spec.dataset):
        if spec.dataset != builtin.PYTHON_DOCS:
            raise ToolkitError(f"data.dataset: unknown builtin {spec.dataset!r}; use {builtin.PYTHON_DOCS}, the only one")
        files = builtin.python_docs()
        return _files_source(spec, [files["train"]], [files["validation"]])
    return _dataset_source(spec)


def expand_files(patterns: list[str], key: str) -> list[Path]:
    """Paths and globs (relative to the working directory) to a sorted list of existing files."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        matches = [Path(m) for m in matches if Path(m).is_file()]
        if not matches:
            raise ToolkitError(f"{key}: {pattern!r} matches no file; check the path (relative to the working directory)")
        files += matches
    kinds = {FILE_BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds:
        odd = next(f for f in files if f.suffix.lower() not in FILE_BUILDERS)
        raise ToolkitError(f"{key}: {odd} is not a {'/'.join(FILE_BUILDERS)} file; convert it or leave it out")
    if len(kinds) > 1:
        raise ToolkitError(f"{key}: mixes file kinds ({', '.join(sorted(kinds))}); use files of one kind")
    return files


def _files_source(spec: DataSpec, train: list[Path], evals: list[Path]) -> _Source:
    digest = hashlib.sha256()
    for group in (train, evals):
        digest.update(b"|")
        for path in group:
            digest.update(file_sha256(path).encode())

    def splits():
        builder = FILE_BUILDERS[train[0].suffix.lower()]
        if evals and FILE_BUILDERS[evals[0].suffix.lower()] != builder:
            raise ToolkitError("data.eval_files: must be the same kind of file as data.train_files")
        data_files = {"train": train}
        if evals:
            data_files["validation"] = evals
        loaded = _read_files(data_files, "data.train_files / data.eval_files")
        return _pick_splits(spec, loaded, "validation" if evals else "")

    return _Source(f"files:{FILE_BUILDERS[train[0].suffix.lower()]}:{digest.hexdigest()}", splits)


def _read_files(data_files: dict[str, list[Path]], key: str):
    """Local files of one kind (see FILE_BUILDERS) as a DatasetDict with the given splits, read afresh."""
    import datasets

    builder = FILE_BUILDERS[next(iter(data_files.values()))[0].suffix.lower()]
    try:
        # datasets caches local files by path and mtime only; callers key their own caches on content.
        return datasets.load_dataset(
            builder,
            data_files={split: [str(p) for p in files] for split, files in data_files.items()},
            download_mode="force_redownload",
        )
    except (ValueError, datasets.exceptions.DatasetGenerationError) as err:
        # "An error occurred while generating the dataset": the parser's own message is the one that helps.
        detail = first_line(err.__cause__ or err)
        raise ToolkitError(
            f"{key}: could not read the files as {builder}: {detail}; check that each is valid {builder}"
        ) from None


def _load_dataset(name: str, config: str, keys: Keys):
    """A save_to_disk folder or a hub dataset (from the local cache when the Hub cannot be reached)."""
    import datasets

    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            return datasets.load_from_disk(str(folder))
        except FileNotFoundError:
            raise ToolkitError(
                f"{keys.dataset}: {name} is not a save_to_disk folder; use {keys.files} for plain files"
            ) from None
        except IndexError:  # datasets 5 writes a split that has no rows as no shards, then cannot read it
            raise ToolkitError(
                f"{keys.dataset}: datasets cannot read {name} back (a split saved with no rows has no shards); "
                "save it again without the empty split"
            ) from None
    if sources.looks_like_path(name):
        raise ToolkitError(f"{keys.dataset}: no such folder {name}; check the path or give a hub id")
    return _load_hub_dataset(name, config, keys)


def _dataset_source(spec: DataSpec) -> _Source:
    import datasets

    loaded = _load_dataset(spec.dataset, spec.config, RECIPE_KEYS)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({spec.train_split: loaded})
    fingerprint = "dataset:" + ",".join(f"{name}={split._fingerprint}" for name, split in sorted(loaded.items()))
    eval_split = spec.eval_split
    if eval_split and eval_split not in loaded:
        if eval_split != DataSpec().eval_split:
            raise ToolkitError(
                f"data.eval_split: {spec.dataset} has no split {eval_split!r} (it has {', '.join(loaded)}); "
                'name one of those, or set "" to carve data.eval_fraction out of train'
            )
        eval_split = ""
    return _Source(f"{fingerprint};eval={eval_split}", lambda: _pick_splits(spec, loaded, eval_split))


def _load_hub_dataset(name: str, config: str, keys: Keys):
    import datasets

    offline = not sources.hub_reachable()
    if offline and not sources.dataset_cached(name):
        raise ToolkitError(
            f"{keys.dataset}: {name!r} is not in the local Hugging Face cache and the Hub cannot be reached; "
            f"save it with save_to_disk on a connected machine and set {keys.dataset} to that folder"
        )
    if offline:
        datasets.config.HF_HUB_OFFLINE = True  # use the cached copy without the libraries' retries
    try:
        return datasets.load_dataset(name, config or None)
    except ValueError as err:  # an unknown config, among others
        raise ToolkitError(f"{keys.config}: {name}: {first_line(err)}") from None
    except (FileNotFoundError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ToolkitError(f"{keys.dataset}: could not load {name!r}: {first_line(err)}") from None


def _pick_splits(spec: DataSpec, loaded, eval_split: str):
    if spec.train_split not in loaded:
        raise ToolkitError(
            f"data.train_split: no split {spec.train_split!r} (the data has {', '.join(loaded)}); name one of those"
        )
    train = loaded[spec.train_split]
    splits = [(spec.train_split, train)] + ([(eval_split, loaded[eval_split])] if eval_split else [])
    for name, split in splits:
        check_text(split, f"the {name!r} split", spec.text_column, RECIPE_KEYS)
    if eval_split:
        return train, loaded[eval_split]
    log.info("no evaluation split: holding out %.1f%% of the training documents", 100 * spec.eval_fraction)
    if len(train) < 2:
        raise ToolkitError("data: the training split has fewer than 2 documents; add text")
    parts = train.train_test_split(test_size=spec.eval_fraction, seed=CARVE_SEED)
    return parts["train"], parts["test"]


def check_text(documents, what: str, text_column: str, keys: Keys = RECIPE_KEYS) -> None:
    """Refuse an empty split, or one without a text column of strings; `what` names it in the message."""
    if len(documents) == 0:
        raise ToolkitError(f"{keys.data}: {what} is empty; add text or name another split")
    if text_column not in documents.column_names:
        raise ToolkitError(
            f"{keys.text_column}: {what} has no column {text_column!r} "
            f"(it has {', '.join(documents.column_names)}); name the column that holds the text"
        )
    dtype = getattr(documents.features[text_column], "dtype", None)
    if dtype not in ("string", "large_string"):
        raise ToolkitError(
            f"{keys.text_column}: column {text_column!r} holds {dtype or 'nested values'}, not text; "
            "name the column that holds the text"
        )


# ---------------------------------------------------------------- documents for evaluation


def read_split(name: str, config: str = "", split: str = "", text_column: str = "text", keys: Keys = OPTION_KEYS):
    """(documents, split name): one split of a dataset (hub id, save_to_disk folder or builtin), checked to
    hold text. Without `split`, the first of EVAL_SPLITS the dataset has; a single saved split is itself."""
    import datasets

    if builtin.is_builtin(name):
        if name != builtin.PYTHON_DOCS:
            raise ToolkitError(f"{keys.dataset}: unknown builtin {name!r}; use {builtin.PYTHON_DOCS}, the only one")
        if config:
            raise ToolkitError(f"{keys.config}: {name} has no configurations; leave {keys.config} out")
        loaded = _read_files({s: [path] for s, path in builtin.python_docs().items()}, keys.dataset)
    else:
        loaded = _load_dataset(name, config, keys)
    if isinstance(loaded, datasets.Dataset):  # save_to_disk of one split: there is nothing to choose
        chosen, documents = split or "(saved split)", loaded
    else:
        chosen = split or next((s for s in EVAL_SPLITS if s in loaded), "")
        if chosen not in loaded:
            wanted = repr(split) if split else f"{' or '.join(map(repr, EVAL_SPLITS))}"
            raise ToolkitError(
                f"{keys.split}: {name} has no split {wanted} (it has {', '.join(loaded)}); name one of those"
            )
        documents = loaded[chosen]
    check_text(documents, f"the {chosen!r} split of {name}", text_column, keys)
    return documents, chosen


def read_files(pattern: str, text_column: str = "text", keys: Keys = OPTION_KEYS):
    """The documents of the files a path or glob matches (sorted, one kind), checked to hold text."""
    files = expand_files([pattern], keys.files)
    documents = _read_files({"train": files}, keys.files)["train"]
    check_text(documents, pattern, text_column, keys)
    return documents
