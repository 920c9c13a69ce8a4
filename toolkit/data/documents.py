"""Documents: read a recipe's data (files, a saved dataset, a hub dataset or a builtin) or one text to score.

Each row of the text column is one document (a text file's lines are its rows); blank rows are skipped.
With `data.format = "prompt_completion"` each row is an example instead, a prompt and a completion column,
numbered (ROW) as read so that a message can name a row after the evaluation share is carved out.
Every input is checked before anything is tokenized: an empty file, a missing column, a split with no rows,
an empty completion, a value that is not text is refused naming the file or split (and the rows) and the fix.
CSV cells are read as the text they hold (CSV cannot quote a number as text), an empty cell as "".
"""

from __future__ import annotations

import glob
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..config.recipe import DataSpec
from ..errors import ToolkitError, first_line, param
from ..modeling.fingerprints import file_sha256
from ..sources import builtin
from ..sources.hub import dataset_cached, hub_reachable, looks_like_path

log = logging.getLogger(__name__)

FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
CARVE_SEED = 0  # the held-out share must not move when the training seed does
TOKENIZE_BATCH = 1000
# Without a split named, evaluation reads the first of these that the dataset has.
EVAL_SPLITS = ("test", "validation")
_TEXT_LIKE = (".txt", ".json", ".jsonl", ".csv")  # formats where a file of whitespace holds no row


class Keys(NamedTuple):
    """What error messages call each input: a recipe's keys, or the parameters of an evaluation."""

    data: str = "data"
    dataset: str = "data.dataset"
    config: str = "data.config"
    split: str = "data.eval_split"
    text_column: str = "data.text_column"
    files: str = "data.train_files"
    prompt_column: str = "data.prompt_column"
    completion_column: str = "data.completion_column"


RECIPE_KEYS = Keys()
# Evaluation's examples have the columns of the adapter's recipe.
EVAL_KEYS = Keys(
    param("datasets"),
    param("datasets"),
    param("config"),
    param("split"),
    param("text_column"),
    param("files"),
    "data.prompt_column (of the adapter's recipe)",
    "data.completion_column (of the adapter's recipe)",
)
ROW = "__gpt2_adapt_row__"  # an example's row number (1-based) as read, kept through carving and shuffling
ROWS_SHOWN = 5  # rows a message names before it says how many more


@dataclass(frozen=True)
class DocumentSource:
    """A recipe's documents for training and evaluation, and a fingerprint of them that is cheap to get."""

    fingerprint: str
    splits: Callable  # () -> (train Dataset, eval Dataset), read when called
    train_files: list[Path] = field(default_factory=list)  # the files it reads, globs expanded (files only)
    eval_files: list[Path] = field(default_factory=list)


def open_source(spec: DataSpec) -> DocumentSource:
    if spec.train_files:
        train = expand_files(spec.train_files, "data.train_files")
        evals = expand_files(spec.eval_files, "data.eval_files") if spec.eval_files else []
        return _files_source(spec, train, evals)
    if builtin.is_builtin(spec.dataset):
        _check_builtin(spec.dataset, spec.format, RECIPE_KEYS)
        files = builtin.dataset_files(spec.dataset)
        return _files_source(spec, [files["train"]], [files["validation"]])
    return _dataset_source(spec)


def _check_builtin(name: str, format: str, keys: Keys) -> None:
    """Refuse an unknown builtin, or one whose rows are not of the format asked for."""
    known = builtin.datasets()
    if name not in known:
        raise ToolkitError(f"{keys.dataset}: unknown builtin {name!r}; use one of {', '.join(known)}")
    if known[name] != format:
        fix = (
            f'set data.format = "{known[name]}" to train on it'
            if keys == RECIPE_KEYS
            else "score it with adapters trained on that format"
        )
        raise ToolkitError(f"{keys.dataset}: {name} holds {known[name].replace('_', '/')} rows; {fix}")


def document_batches(documents, text_column: str):
    """The documents' texts in batches of up to TOKENIZE_BATCH rows, blank rows (and non-strings) left out."""
    for batch in documents.select_columns([text_column]).iter(batch_size=TOKENIZE_BATCH):
        texts = [t for t in batch[text_column] if isinstance(t, str) and t.strip()]
        if texts:
            yield texts


# ---------------------------------------------------------------- files


def expand_files(patterns: list[str], key: str) -> list[Path]:
    """Paths and globs (relative to the working directory) to a sorted list of existing, non-empty files of
    one kind."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            raise ToolkitError(f"{key}: {pattern} is a folder; give its files, e.g. '{pattern.rstrip('/')}/*.txt'")
        matches = sorted(glob.glob(str(path), recursive=True))
        matches = [Path(m) for m in matches if Path(m).is_file()]
        if not matches:
            raise ToolkitError(
                f"{key}: {pattern!r} matches no file; check the path (relative to the working directory)"
            )
        files += matches
    kinds = {FILE_BUILDERS.get(f.suffix.lower()) for f in files}
    if None in kinds:
        odd = next(f for f in files if f.suffix.lower() not in FILE_BUILDERS)
        raise ToolkitError(f"{key}: {odd} is not a {'/'.join(FILE_BUILDERS)} file; convert it or leave it out")
    if len(kinds) > 1:
        raise ToolkitError(f"{key}: mixes file kinds ({', '.join(sorted(kinds))}); use files of one kind")
    problems = [f"{key}: {problem}" for f in files if (problem := _emptiness(f))]
    if problems:
        raise ToolkitError(*problems)
    return files


def _emptiness(path: Path) -> str | None:
    """Why a file holds no document: empty, or (text-like formats) nothing but whitespace."""
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes); add text to it or leave it out"
    if path.suffix.lower() not in _TEXT_LIKE:
        return None
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            if chunk.strip():
                return None
    return f"{path} holds only blank lines; add text to it or leave it out"


def _files_source(spec: DataSpec, train: list[Path], evals: list[Path]) -> DocumentSource:
    digest = hashlib.sha256()
    for group in (train, evals):
        digest.update(b"|")
        for path in group:
            digest.update(file_sha256(path).encode())
    builder = FILE_BUILDERS[train[0].suffix.lower()]
    if evals and FILE_BUILDERS[evals[0].suffix.lower()] != builder:
        raise ToolkitError("data.eval_files: must be the same kind of file as data.train_files")

    def splits():
        data_files = {"train": train}
        if evals:
            data_files["validation"] = evals
        loaded = read_file_splits(data_files, "data.train_files / data.eval_files")
        keys = {"train": "data.train_files", "validation": "data.eval_files"}
        for split, files in data_files.items():
            loaded[split] = check_rows(loaded[split], _files_label(files), spec, RECIPE_KEYS._replace(data=keys[split]))
        return _pick_splits(spec, loaded, "validation" if evals else "")

    return DocumentSource(f"files:{builder}:{digest.hexdigest()}", splits, train, evals)


def _files_label(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{files[0]} and {len(files) - 1} more files"


def read_file_splits(data_files: dict[str, list[Path]], key: str):
    """Local files of one kind (see FILE_BUILDERS) as a DatasetDict with the given splits, read afresh."""
    import datasets

    builder = FILE_BUILDERS[next(iter(data_files.values()))[0].suffix.lower()]
    options = _csv_as_text([p for files in data_files.values() for p in files]) if builder == "csv" else {}
    try:
        # datasets caches local files by path and mtime only; callers key their own caches on content.
        return datasets.load_dataset(
            builder,
            data_files={split: [str(p) for p in files] for split, files in data_files.items()},
            download_mode="force_redownload",
            **options,
        )
    except (ValueError, datasets.exceptions.DatasetGenerationError) as err:
        # "An error occurred while generating the dataset": the parser's own message is the one that helps.
        detail = first_line(err.__cause__ or err)
        raise ToolkitError(
            f"{key}: could not read the files as {builder}: {detail}; check that each is valid {builder}"
        ) from None


def _csv_as_text(files: list[Path]) -> dict:
    """pandas options that read every CSV cell as the text it holds: CSV has no way to quote a number as text,
    so a completion "4" or "007" must not become an integer, nor an empty prompt a null. pandas types a cell
    before any converter sees it unless each column has one, so the columns are named from the headers."""
    import csv

    columns: dict[str, None] = {}
    for path in files:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            columns.update(dict.fromkeys(next(csv.reader(f), [])))
    return {"converters": dict.fromkeys(columns, str), "keep_default_na": False}


# ---------------------------------------------------------------- datasets


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
    if looks_like_path(name):
        raise ToolkitError(f"{keys.dataset}: no such folder {name}; check the path or give a hub id")
    return _load_hub_dataset(name, config, keys)


def _dataset_source(spec: DataSpec) -> DocumentSource:
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

    def splits():
        chosen = dict(loaded)  # the loaded DatasetDict stays as datasets cached it
        for split in {spec.train_split, eval_split} - {""}:
            if split in loaded:
                chosen[split] = check_rows(loaded[split], f"the {split!r} split", spec)
        return _pick_splits(spec, chosen, eval_split)

    return DocumentSource(f"{fingerprint};eval={eval_split}", splits)


def _load_hub_dataset(name: str, config: str, keys: Keys):
    import datasets

    offline = not hub_reachable()
    if offline and not dataset_cached(name):
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
    if eval_split:
        return train, loaded[eval_split]
    log.info("no evaluation split: holding out %.1f%% of the training documents", 100 * spec.eval_fraction)
    if len(train) < 2:
        raise ToolkitError("data: the training split has fewer than 2 documents; add text")
    parts = train.train_test_split(test_size=spec.eval_fraction, seed=CARVE_SEED)
    return parts["train"], parts["test"]


def check_rows(documents, what: str, spec: DataSpec, keys: Keys = RECIPE_KEYS):
    """The documents checked for the spec's format; examples come back numbered (ROW)."""
    if not spec.examples:
        check_text(documents, what, spec.text_column, keys)
        return documents
    check_examples(documents, what, spec, keys)
    return documents.add_column(ROW, list(range(1, len(documents) + 1)))


def check_examples(documents, what: str, spec: DataSpec, keys: Keys = RECIPE_KEYS) -> None:
    """Refuse examples without rows, without the prompt or completion column (of strings), or with an empty
    completion (each must teach something); an empty prompt is allowed."""
    if len(documents) == 0:
        raise ToolkitError(f"{keys.data}: {what} has no rows; add examples or name another split")
    problems = []
    for key, column, holds in (
        (keys.prompt_column, spec.prompt_column, "prompts"),
        (keys.completion_column, spec.completion_column, "completions"),
    ):
        if column not in documents.column_names:
            problems.append(
                f"{key}: {what} has no column {column!r} (it has {', '.join(documents.column_names)}); "
                f"name the column that holds the {holds}"
            )
            continue
        problems += _not_text(documents, what, column, key, holds)
    if problems:
        raise ToolkitError(*problems)
    missing, empty, row = [], [], 0
    for batch in documents.select_columns([spec.prompt_column, spec.completion_column]).iter(batch_size=TOKENIZE_BATCH):
        for prompt, completion in zip(batch[spec.prompt_column], batch[spec.completion_column]):
            row += 1
            if prompt is None:
                missing.append(row)
            if not (completion or "").strip():
                empty.append(row)
    if missing:
        problems.append(
            f"{keys.prompt_column}: {describe_rows(missing)} of {what} {'has' if len(missing) == 1 else 'have'} "
            f"no {spec.prompt_column!r}; give each row a prompt (an empty string is one) or leave it out"
        )
    if empty:
        problems.append(
            f"{keys.completion_column}: {describe_rows(empty)} of {what} {'has' if len(empty) == 1 else 'have'} "
            "an empty completion; give each row a completion to learn, or leave it out"
        )
    if problems:
        raise ToolkitError(*problems)


_JSON_KINDS = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}


def _not_text(documents, what: str, column: str, key: str, holds: str) -> list[str]:
    """The problem (none or one) of a column that is not all text: the rows that hold something else, and
    what (a JSON file may mix a stray number or list among strings); empty cells are checked elsewhere."""
    if getattr(documents.features[column], "dtype", None) in ("string", "large_string"):
        return []
    odd, row = {}, 0
    for batch in documents.select_columns([column]).iter(batch_size=TOKENIZE_BATCH):
        for value in batch[column]:
            row += 1
            if value is not None and not isinstance(value, str):
                odd[row] = _JSON_KINDS.get(type(value), type(value).__name__)
    if not odd:
        return []
    rows = sorted(odd)
    return [
        (
            f"{key}: {describe_rows(rows, odd)} of {what} {'holds' if len(rows) == 1 else 'hold'} no text in "
            f"column {column!r}; write {'it' if len(rows) == 1 else 'each'} as a string (in quotes), or name the "
            f"column that holds the {holds}"
        )
    ]


def describe_rows(rows: list[int], detail: dict[int, str] | None = None) -> str:
    """ "row 3", "rows 3, 7 and 9", "rows 3, 7, 9, 11, 12 and 40 more", each with its `detail` if given."""
    named = [f"{row:,}" + (f" ({detail[row]})" if detail else "") for row in rows[:ROWS_SHOWN]]
    if len(rows) == 1:
        return f"row {named[0]}"
    more = len(rows) - ROWS_SHOWN
    tail = f"{more:,} more" if more > 0 else named.pop()
    return f"rows {', '.join(named)} and {tail}"


def check_text(documents, what: str, text_column: str, keys: Keys = RECIPE_KEYS) -> None:
    """Refuse a split with no rows, or without a text column of strings, or whose rows are all blank;
    `what` names it in the message."""
    if len(documents) == 0:
        raise ToolkitError(f"{keys.data}: {what} has no rows; add text or name another split")
    if text_column not in documents.column_names:
        raise ToolkitError(
            f"{keys.text_column}: {what} has no column {text_column!r} "
            f"(it has {', '.join(documents.column_names)}); name the column that holds the text"
        )
    problems = _not_text(documents, what, text_column, keys.text_column, "text")
    if problems:
        raise ToolkitError(*problems)
    if next(document_batches(documents, text_column), None) is None:
        raise ToolkitError(f"{keys.data}: {what} holds only blank rows; add text or name another source")


# ---------------------------------------------------------------- one text to score


def read_split(
    name: str,
    config: str = "",
    split: str = "",
    text_column: str = "text",
    keys: Keys = EVAL_KEYS,
    examples: DataSpec | None = None,
):
    """(documents, split name): one split of a dataset (hub id, save_to_disk folder or builtin), checked to
    hold text, or with `examples` (a recipe's data section) its prompt/completion rows, numbered. Without
    `split`, the first of EVAL_SPLITS the dataset has; a single saved split is itself."""
    import datasets

    if builtin.is_builtin(name):
        _check_builtin(name, (examples or DataSpec()).format, keys)
        if config:
            raise ToolkitError(f"{keys.config}: {name} has no configurations; leave {keys.config} out")
        loaded = read_file_splits({s: [path] for s, path in builtin.dataset_files(name).items()}, keys.dataset)
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
    spec = examples or DataSpec(text_column=text_column)
    return check_rows(documents, f"the {chosen!r} split of {name}", spec, keys), chosen


def read_files(pattern: str, text_column: str = "text", keys: Keys = EVAL_KEYS, examples: DataSpec | None = None):
    """The documents of the files a path or glob matches (sorted, one kind), checked to hold text, or with
    `examples` (a recipe's data section) their prompt/completion rows, numbered."""
    files = expand_files([pattern], keys.files)
    documents = read_file_splits({"train": files}, keys.files)["train"]
    return check_rows(documents, pattern, examples or DataSpec(text_column=text_column), keys._replace(data=keys.files))
