"""Shared fixtures: a tiny GPT-2 checkpoint and a corpus made here, and a store and cache per test.

Nothing touches the Hugging Face Hub: HF_HUB_OFFLINE is set before any library is imported, and every
model and dataset is a local folder or file that these fixtures write.
"""

import os
import random
import shutil
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="gpt2-adapt-tests-hf-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME  # an empty Hugging Face cache: nothing of the user's is read or written

from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner

from toolkit.cli import main
from toolkit.sources import builtin, pretraining

REPO = Path(__file__).resolve().parent.parent  # the repository's root: recipes/, README.md, docs/

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child"]
VERBS = ["sees", "likes", "finds", "follows", "paints", "hears"]
OBJECTS = ["the river", "a red ball", "the small house", "an apple", "the moon", "a green door"]


def make_corpus(lines: int, seed: int) -> str:
    """Sentences from a tiny grammar: structured enough for a LoRA on a random model to learn quickly."""
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        sentences = [
            f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(rng.randint(1, 3))
        ]
        out.append(" ".join(sentences).capitalize())
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "train.txt").write_text(make_corpus(1500, seed=1))
    (folder / "valid.txt").write_text(make_corpus(150, seed=2))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, corpus_dir) -> Path:
    """A GPT-2 checkpoint folder: 2 layers, 32 dimensions, 64 positions, a 300-token BPE."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    builtin.write_gpt2(
        folder, [corpus_dir / "train.txt"], vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2
    )
    return folder


_SHARED_BUILTINS: list[Path] = []  # the shared builtin folder, once `builtin_base` has built it


@pytest.fixture(scope="session")
def builtin_base(tmp_path_factory) -> Path:
    """builtin:tiny-gpt2, pretrained once (about a minute) into a cache that every test asking for it shares,
    and with it the builtin corpora; under pytest-xdist the workers share it too (the build takes a lock)."""
    shared = tmp_path_factory.getbasetemp().parent / "builtin-cache"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GPT2_ADAPT_CACHE", str(shared))
        folder = pretraining.tiny_gpt2()
    _SHARED_BUILTINS.append(folder.parent)
    return folder


@pytest.fixture(autouse=True)
def toolkit_logging():
    """The CLI, run in-process (by a test, or by a session fixture that trains with it), points the
    "toolkit" logger at its own handler and stops it propagating: each test starts from logging's
    defaults, so that its caplog sees the toolkit's records."""
    import logging

    logger = logging.getLogger("toolkit")
    logger.handlers[:], logger.propagate, logger.disabled = [], True, False
    logger.setLevel(logging.NOTSET)
    yield


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Each test gets its own store, cache and working directory (the cache holding links to the shared
    builtin base and corpora, once built)."""
    monkeypatch.setenv("GPT2_ADAPT_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("GPT2_ADAPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    for shared in _SHARED_BUILTINS:
        (tmp_path / "cache" / "builtin").mkdir(parents=True, exist_ok=True)
        for entry in shared.iterdir():
            if not entry.name.startswith("."):
                (tmp_path / "cache" / "builtin" / entry.name).symlink_to(entry)


def tiny_recipe(base: Path, corpus_dir: Path, name: str = "tiny", /, **sections) -> dict:
    """A recipe (as a dict) that trains `model` on the corpus in seconds; each keyword is a section
    whose keys replace the defaults, e.g. lora={"r": 2}."""
    recipe = {
        "model": {"name": str(base)},
        "data": {
            "train_files": [str(corpus_dir / "train.txt")],
            "eval_files": [str(corpus_dir / "valid.txt")],
            "block_size": 32,
        },
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "all"},
        "training": {
            "max_steps": 30,
            "batch_size": 8,
            "learning_rate": 1e-2,
            "warmup_ratio": 0.0,
            "eval_every": 0,
            "save_every": 10,
            "log_every": 10,
        },
        "output": {"name": name},
    }
    for section, keys in sections.items():
        recipe.setdefault(section, {}).update(keys)
    return recipe


@pytest.fixture
def write_recipe(tmp_path, tiny_model, corpus_dir):
    """write_recipe(**sections) -> path of a recipe that trains the tiny model on the corpus in seconds.

    Each keyword is a section whose keys replace the defaults below, e.g. write_recipe(lora={"r": 2}).
    """

    def write(name: str = "recipe.toml", **sections) -> Path:
        path = tmp_path / name
        path.write_text(tomli_w.dumps(tiny_recipe(tiny_model, corpus_dir, **sections)))
        return path

    return write


@pytest.fixture
def cli():
    """cli(*args, input=None) -> click Result of running `gpt2-adapt args...` in this process (`input`: what
    it reads on standard input)."""
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


# name -> (base: "tiny" or "other", lora section, quantization mode) of the adapters in `trained_adapters`
TRAINED = {
    "quickstart": ("tiny", {"r": 2, "alpha": 4, "dropout": 0.0, "targets": "all"}, "none"),
    "poems": ("tiny", {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attn"}, "none"),
    "poems8": ("tiny", {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "all"}, "int8"),
    "elsewhere": ("other", {"r": 2, "alpha": 4, "dropout": 0.0, "targets": "all"}, "none"),
}


@pytest.fixture(scope="session")
def other_model(tmp_path_factory, corpus_dir) -> Path:
    """Another tiny GPT-2: the same shapes and tokenizer as `tiny_model`, other weights."""
    folder = tmp_path_factory.mktemp("other-gpt2")
    builtin.write_gpt2(
        folder, [corpus_dir / "train.txt"], vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=2, seed=1
    )
    return folder


@pytest.fixture(scope="session")
def trained_adapters(tmp_path_factory, tiny_model, other_model, corpus_dir) -> Path:
    """A store with the TRAINED adapters (5 steps each, by `gpt2-adapt train`), built once per session;
    tests copy it rather than change it."""
    root = tmp_path_factory.mktemp("trained-adapters")
    bases = {"tiny": tiny_model, "other": other_model}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT2_ADAPT_CACHE", str(root / "cache"))
        mp.chdir(root)
        for name, (base, lora, quantization) in TRAINED.items():
            recipe = tiny_recipe(
                bases[base], corpus_dir, name, lora=lora, quantization={"mode": quantization}, training={"max_steps": 5}
            )
            path = root / f"{name}.toml"
            path.write_text(tomli_w.dumps(recipe))
            result = CliRunner().invoke(
                main, ["train", str(path), "--store", str(root / "store")], catch_exceptions=False
            )
            assert result.exit_code == 0, result.output
    return root / "store"


@pytest.fixture
def store(trained_adapters) -> Path:
    """This test's store ($GPT2_ADAPT_STORE), holding a copy of the adapters in `trained_adapters`."""
    root = Path(os.environ["GPT2_ADAPT_STORE"])
    shutil.copytree(trained_adapters, root)
    return root
