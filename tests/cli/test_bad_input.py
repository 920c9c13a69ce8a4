"""Bad input never loses work: every mistake in a recipe, the data, the model, the store, the command line,
a damaged adapter or a damaged checkpoint ends the same way.

- exit code 2 and no traceback;
- after whatever the command printed on its way, only `error:` lines, one per problem, each naming the
  thing that is wrong (the recipe key, the file, the adapter) and the fix: an imperative ("pass",
  "set", "point", ...) or the value it must have ("must be ...", "did you mean ...");
- nothing changed on disk: every folder and file under the test's folder (paths and bytes; the derived
  `cache/` aside) is the same before and after, and a store that did not exist is not created.

A case is a setup function, which prepares files (or a store) and returns the command's arguments, with
what its error lines must name.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from helpers import snapshot, tiny_llama_config, truncate

from toolkit.training.checkpoints import PROGRESS

# Words that tell the user what to do. "must be" / "did you mean" / "expected" state the value wanted.
FIX = re.compile(
    r"\b(pass|set|use|point|add|remove|lower|name|check|give|choose|delete|convert|leave|download|save|"
    r"restore|fix|run|retrain|import|bring|wait|free)\b|\bmust (be|not)\b|did you mean|\(valid: |\bexpected\b"
)
# Keys, options, paths and quoted names are the thing, not the fix: "model.name" or "--set" is no verb.
NOT_WORDS = re.compile(r"--[\w-]+|\S*\w[./]\w\S*|'[^']*'|`[^`]*`")
# A run that stops at step 20 with checkpoints at 10 and 20: trained once, copied into the tests that need it.
RUN = {"training": {"max_steps": 20, "save_every": 10, "keep_checkpoints": 2}}


@dataclass(frozen=True)
class World:
    """What a case's setup works with: the test's folder, the recipe writer, the tiny model and corpus."""

    root: Path
    write_recipe: Callable
    cli: Callable
    tiny_model: Path
    corpus_dir: Path
    trained: Path  # the store of RUN, filled by the first test that asks for it
    monkeypatch: pytest.MonkeyPatch  # to set environment variables for the command
    held: list = field(default_factory=list)  # open files to keep open while the command runs
    mounts: list = field(default_factory=list)  # filesystems mounted for the case, unmounted after it
    stdin: list = field(default_factory=list)  # what the command reads on standard input (one bytes, if any)

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return name

    def jsonl(self, name: str, rows: list[dict]) -> str:
        return self.file(name, "".join(json.dumps(row) + "\n" for row in rows))

    def train(self, *args: str, **sections) -> list:
        """`train RECIPE ARGS...` with the tiny recipe, each section's keys replacing the defaults."""
        return ["train", self.write_recipe(**sections), *args]

    def folder(self, name: str) -> str:
        (self.root / name).mkdir(parents=True)
        return name

    def files(self, train: list[str], evals: list[str] = ()) -> list:
        """`train` on these data files (no eval files unless given)."""
        return self.train(data={"train_files": train, "eval_files": list(evals)})

    def dataset(self, dataset: str, **data) -> list:
        """`train` on a dataset instead of files."""
        return self.train(data={"dataset": dataset, "train_files": [], "eval_files": [], **data})

    def examples(self, rows: list[dict], **data) -> list:
        """`train` on these prompt/completion rows (a JSONL file), no eval files unless given."""
        return self.train(
            data={
                "train_files": [self.jsonl("qa.jsonl", rows)],
                "eval_files": [],
                "format": "prompt_completion",
                **data,
            }
        )

    def valid(self) -> str:
        return str(self.corpus_dir / "valid.txt")

    def store(self) -> Path:
        """A copy of the trained store: adapter `tiny`, its checkpoints 10 and 20, its run record and lock."""
        if (self.root / "store").exists():  # already copied by an earlier step of the same setup
            return self.root / "store"
        if not self.trained.exists():
            result = self.cli("train", self.write_recipe("trained.toml", **RUN), "--store", self.trained)
            assert result.exit_code == 0, result.output
        shutil.copytree(self.trained, self.root / "store")
        return self.root / "store"

    def stored(self, *args, unfinished: bool = False) -> list:
        """The trained store (left unfinished if asked), then `args`: for commands that find it in place."""
        self.unfinished() if unfinished else self.store()
        return list(args)

    def unfinished(self) -> Path:
        """A run that died after checkpoint 10: no adapter, no checkpoint 20; returns that run's folder."""
        store = self.store()
        shutil.rmtree(store / "tiny")
        shutil.rmtree(store / ".checkpoints/tiny/checkpoint-20")
        return store / ".checkpoints/tiny"

    def adapter(self) -> Path:
        return self.store() / "tiny"

    def eval(self, *args: str) -> list:
        return ["eval", "--adapter", "tiny", "--files", self.valid(), *args]

    def generate(self, *args: str) -> list:
        return ["generate", "--adapter", "tiny", "--prompt", "The", "--greedy", "--max-new-tokens", "2", *args]

    def merge(self, *args: str) -> list:
        return ["merge", "tiny", "--out", "merged", *args]

    def saved_dataset(self, name: str, **splits: list[str]) -> str:
        import datasets

        data = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": rows}) for s, rows in splits.items()})
        data.save_to_disk(str(self.root / name))
        return name

    def import_(self, name: str, config: dict | None, *args: str, weights: str = "adapter_model.safetensors") -> list:
        """`adapters import NAME ARGS...` of a folder like peft's save_pretrained output: this config (if
        any) and an empty weights file."""
        self.folder(name)
        if config is not None:
            self.file(f"{name}/adapter_config.json", json.dumps(config))
        self.file(f"{name}/{weights}", b"")
        return ["adapters", "import", name, *args]


def edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def lora_config(**changes) -> dict:
    return {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], **changes}


# ---------------------------------------------------------------- setups that take more than a line


def gpt2_without_tokenizer(w: World) -> list:
    folder = w.root / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(w.tiny_model / name, folder / name)
    return w.train(model={"name": str(folder)})


def gpt2_with_pickle_weights_only(w: World) -> list:
    folder = w.root / "pickled"
    shutil.copytree(w.tiny_model, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    return w.train(model={"name": str(folder)})


def llama_model(w: World) -> list:
    tiny_llama_config(300).save_pretrained(w.root / "llama")
    return w.train(model={"name": str(w.root / "llama")})


def changed_recipe_on_resume(w: World) -> list:
    w.unfinished()
    return w.train("--resume", training={**RUN["training"], "learning_rate": 5e-3})


def damaged_checkpoint(file_name: str, damage: Callable[[Path], None], step: int = 10) -> Callable:
    """A run with a checkpoint that is marked complete but whose `file_name` was damaged afterwards."""

    def setup(w: World) -> list:
        if step == 10:
            run = w.unfinished()
        else:
            shutil.rmtree(w.store() / "tiny")
            run = w.root / "store/.checkpoints/tiny"
        checkpoint = run / f"checkpoint-{step}"
        assert (checkpoint / PROGRESS).is_file()
        damage(checkpoint / file_name)
        return w.train("--resume", **RUN)

    return setup


def garbage(path: Path) -> None:
    path.write_text("{ not json")


def damaged_adapter(damage: Callable[[Path], None], *args: str, command: str = "eval") -> Callable:
    """The trained adapter, damaged, then loaded by `command` (eval, generate or merge)."""

    def setup(w: World) -> list:
        damage(w.adapter())
        return getattr(w, command)(*args)

    return setup


def another_base(w: World) -> list:
    """The adapter's base, copied with one weight changed: same shapes, other content."""
    from safetensors.torch import load_file, save_file

    w.adapter()
    folder = w.root / "other-base"
    shutil.copytree(w.tiny_model, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(n for n in sorted(weights) if n.endswith("wte.weight"))
    weights[name] = weights[name] + 1.0
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return w.eval("--base", str(folder))


def base_moved(w: World) -> list:
    """The base the adapter's manifest names is no longer where it was."""
    manifest = w.adapter() / "manifest.json"
    record = json.loads(manifest.read_text())
    record["base"]["name"] = str(w.root / "moved-away")
    manifest.write_text(json.dumps(record))
    return w.eval()


def being_trained(w: World) -> list:
    """Another process holds the adapter's lock (a second open file: flock locks it against this one)."""
    import fcntl

    lock = w.root / "store/.locks/tiny.lock"
    lock.parent.mkdir(parents=True)
    held = open(lock, "w")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.write("12345")
    held.flush()
    w.held.append(held)
    return w.train()


def merge_over_a_folder(w: World) -> list:
    w.file("merged/config.json", "{}")
    return w.stored(*w.merge())


def imported_copy_of_tiny(w: World) -> list:
    """The trained adapter's peft files elsewhere, imported under the name it already has in the store."""
    adapter = w.adapter()
    folder = w.root / "downloads" / "tiny"
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(adapter / name, folder / name)
    return ["adapters", "import", "downloads/tiny"]


# ---------------------------------------------------------------- setups for the hostile-input round (issue 12)


def read_only(w: World, name: str, fill: Callable[[Path], None] = lambda folder: None) -> Path:
    """A real read-only filesystem (a tmpfs remounted read-only) at `name`, after `fill` put files in it;
    skipped where mounting is not allowed. Root ignores permission bits, not a read-only mount."""
    folder = w.root / name
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    w.mounts.append(folder)
    fill(folder)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    return folder


def read_only_store(w: World) -> Path:
    """The trained store, on a read-only filesystem."""
    w.store()
    return read_only(w, "ro", lambda folder: shutil.copytree(w.root / "store", folder / "store"))


def symlinked_adapter(w: World) -> str:
    """store/evil: a symbolic link to an adapter folder outside the store."""
    store = w.store()
    shutil.copytree(store / "tiny", w.root / "outside" / "evil")
    (store / "evil").symlink_to(w.root / "outside" / "evil")
    return "evil"


def symlinked_weights(w: World) -> str:
    """store/tiny's weights file: a symbolic link to the same bytes outside the store."""
    weights = w.store() / "tiny" / "adapter_model.safetensors"
    shutil.move(weights, w.root / "elsewhere.safetensors")
    weights.symlink_to(w.root / "elsewhere.safetensors")
    return "tiny"


def copied_under_another_name(w: World) -> str:
    """store/copy: the folder of adapter 'tiny' copied by hand under another name (its manifest says tiny)."""
    shutil.copytree(w.store() / "tiny", w.root / "store" / "copy")
    return "copy"


def damaged_records(w: World) -> str:
    """A second adapter whose metrics.json is a JSON array (the listing must survive it)."""
    shutil.copytree(w.store() / "tiny", w.root / "store" / "broken")
    manifest = json.loads((w.root / "store/broken/manifest.json").read_text())
    manifest["name"] = "broken"
    (w.root / "store/broken/manifest.json").write_text(json.dumps(manifest))
    (w.root / "store/broken/metrics.json").write_text("[1, 2, 3]")
    return "broken"


def pickle_in_place_of_weights(w: World) -> list:
    """adapter_model.bin (a torch.save state dict) where the safetensors weights were."""
    from safetensors.torch import load_file

    adapter = w.adapter()
    torch.save(load_file(adapter / "adapter_model.safetensors"), adapter / "adapter_model.bin")
    (adapter / "adapter_model.safetensors").unlink()
    return w.generate("--allow-unverified")


def sparse_weights(w: World) -> list:
    """An adapter folder whose safetensors file is 2 GiB of holes (a sparse file: no header)."""
    args = w.import_("sparse", lora_config(base_model_name_or_path=str(w.tiny_model)))
    with open(w.root / "sparse" / "adapter_model.safetensors", "wb") as f:
        f.truncate(2 << 30)
    return args


def retrain_with_another_recipe_and_no_checkpoints(w: World) -> list:
    """The store holds tiny (learning rate 1e-2, its checkpoints gone); --resume with another learning rate."""
    shutil.rmtree(w.store() / ".checkpoints")
    return w.train("--resume", training={**RUN["training"], "learning_rate": 3e-3})


def csv_into_the_store(w: World) -> list:
    w.store()
    return w.eval("--csv", "store/tiny/adapter_config.json")


def heatmap_into_the_store(w: World) -> list:
    w.store()
    return w.eval("--heatmap", "store/tiny/training.png")


def csv_over_a_file_of_yours(w: World) -> list:
    w.store()
    w.file("notes.csv", "my,own,data\n1,2,3\n")
    return w.eval("--csv", "notes.csv")


def cache_is_a_file(w: World) -> list:
    w.monkeypatch.setenv("GPT2_ADAPT_CACHE", str(w.root / w.file("cache-file", "not a folder")))
    return ["plan", w.write_recipe(), "--measure-steps", "0"]


def cache_is_read_only(w: World) -> list:
    w.monkeypatch.setenv("GPT2_ADAPT_CACHE", str(read_only(w, "ro-cache")))
    return ["plan", w.write_recipe(), "--measure-steps", "0"]


def store_through_the_environment(w: World) -> list:
    w.monkeypatch.setenv("GPT2_ADAPT_STORE", str(w.store()))
    return ["adapters", "show", "nope"]


def binary_standard_input(w: World) -> list:
    w.store()
    w.stdin.append(Path("/bin/ls").read_bytes()[:4096])
    return ["generate", "--adapter", "tiny", "--greedy", "--max-new-tokens", "2"]


# ---------------------------------------------------------------- the cases


def case(id: str, setup: Callable[[World], list], *names: str, lines: int = 1, marks=()):
    """A bad input: `setup(world)` -> the command's arguments; `names`: what its error lines name (each line
    names one of them, and each is named by some line); `lines`: how many problems it has."""
    return pytest.param(setup, names, lines, id=id, marks=marks)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="valid with CUDA")
LINES = [f"line {i}" for i in range(1, 40)]
QA = [{"prompt": f"What is line {i}?", "completion": f" line {i}."} for i in range(1, 40)]

CASES = [
    # recipes
    case(
        "recipe-malformed-toml", lambda w: ["train", w.file("recipe.toml", "[lora]\nr = \n")], "recipe.toml", "line 2"
    ),
    case("recipe-unknown-section", lambda w: w.train(lorra={"r": 4}), "lorra"),
    case("recipe-unknown-key", lambda w: w.train(lora={"rank": 8}), "lora.rank"),
    case("recipe-wrong-type", lambda w: w.train(lora={"r": "eight"}), "lora.r"),
    case("recipe-out-of-range", lambda w: w.train(training={"learning_rate": -1.0}), "training.learning_rate"),
    case(
        "recipe-section-not-a-table",
        lambda w: ["train", w.file("recipe.toml", f'lora = 8\n[data]\ntrain_files = ["{w.valid()}"]\n')],
        "lora",
    ),
    case(
        "recipe-two-problems",
        lambda w: w.train(lora={"r": 0}, training={"batch_size": 0}),
        "lora.r",
        "training.batch_size",
        lines=2,
    ),
    case(
        "recipe-dataset-and-train-files",
        lambda w: w.train(data={"dataset": "builtin:python-docs", "eval_files": []}),
        "data.dataset and data.train_files",
    ),
    case("recipe-no-data", lambda w: w.train(data={"train_files": [], "eval_files": []}), "data.dataset"),
    case(
        "recipe-eval-files-with-dataset",
        lambda w: w.train(data={"dataset": "builtin:python-docs", "train_files": []}),
        "data.eval_files",
    ),
    case("recipe-config-with-files", lambda w: w.train(data={"config": "wikitext-2-raw-v1"}), "data.config"),
    case("recipe-bad-output-name", lambda w: w.train(output={"name": "../x"}), "output.name"),
    case("recipe-missing-file", lambda w: ["train", "nope.toml"], "nope.toml"),
    case("recipe-is-a-directory", lambda w: ["train", w.folder("recipes.d")], "recipes.d"),
    case(
        "recipe-not-utf8",
        lambda w: ["train", w.file("latin1.toml", '[model]\nname = "caf\xe9"\n'.encode("latin-1"))],
        "latin1.toml",
    ),
    case("recipe-show-invalid", lambda w: ["recipe", "show", w.write_recipe(lora={"dropout": 1.5})], "lora.dropout"),
    # command-line arguments
    case("set-malformed", lambda w: w.train("--set", "lora.r"), "--set 'lora.r'"),
    case("set-unknown-key", lambda w: w.train("--set", "lora.rank=8"), "lora.rank"),
    case("set-bad-value", lambda w: w.train("--set", "training.precision=fp8"), "training.precision"),
    case("resume-and-overwrite", lambda w: w.train("--resume", "--overwrite"), "--resume and --overwrite"),
    case("missing-argument", lambda w: ["train"], "RECIPE"),
    case("unknown-option", lambda w: w.train("--learning-rate", "1"), "--learning-rate"),
    case("unknown-command", lambda w: ["trian", "recipe.toml"], "trian"),
    case("store-is-a-file", lambda w: w.train("--store", w.file("store.txt", "")), "--store"),
    case("eval-nothing-to-score", lambda w: ["eval", "--adapter", "tiny"], "--files"),
    # data
    case("data-glob-matches-nothing", lambda w: w.files(["missing/*.txt"]), "data.train_files", "missing/*.txt"),
    case("data-unsupported-extension", lambda w: w.files([w.file("notes.md", "\n".join(LINES))]), "notes.md"),
    case(
        "data-mixed-kinds",
        lambda w: w.files([w.file("a.txt", "\n".join(LINES)), w.jsonl("b.jsonl", [{"text": "x"}])]),
        "data.train_files",
    ),
    case(
        "data-eval-of-another-kind",
        lambda w: w.files([w.valid()], [w.jsonl("v.jsonl", [{"text": t} for t in LINES])]),
        "data.eval_files",
    ),
    case("data-only-blank-lines", lambda w: w.files([w.file("blank.txt", "\n  \n\t\n" * 10)]), "data.train_files"),
    case(
        "data-shorter-than-a-block",
        lambda w: w.files([w.file("short.txt", "the cat sees the moon.\n")], [w.valid()]),
        "data.block_size",
    ),
    case(
        "data-missing-text-column",
        lambda w: w.files([w.jsonl("rows.jsonl", [{"body": t} for t in LINES])]),
        "data.text_column",
        "'text'",
    ),
    case(
        "data-non-text-column",
        lambda w: w.files([w.jsonl("rows.jsonl", [{"text": i} for i in range(40)])]),
        "data.text_column",
        "rows 1 (a number)",
    ),
    case(
        "data-stray-values-among-strings",
        lambda w: w.files(
            [w.jsonl("rows.jsonl", [{"text": [t] if i == 6 else 7 if i == 2 else t} for i, t in enumerate(LINES)])]
        ),
        "data.text_column",
        "rows 3 (a number) and 7 (a list)",
        "rows.jsonl",
    ),
    case(
        "data-malformed-jsonl",
        lambda w: w.files([w.file("rows.jsonl", '{"text": "a"}\n{"text": \n')]),
        "data.train_files",
    ),
    case(
        "data-folder-not-saved-by-datasets",
        lambda w: w.dataset(str(Path(w.file("plain/a.txt", "x")).parent)),
        "data.dataset",
        "save_to_disk",
    ),
    case(
        "data-no-such-dataset-folder",
        lambda w: w.dataset("./no-such-dataset"),
        "data.dataset",
        "./no-such-dataset",
    ),
    case(
        "data-uncached-hub-dataset",
        lambda w: w.dataset("someone/not-cached-corpus"),
        "data.dataset",
        "someone/not-cached-corpus",
    ),
    case(
        "data-unknown-builtin",
        lambda w: w.dataset("builtin:wikipedia"),
        "data.dataset",
        "builtin:wikipedia",
    ),
    case(
        "data-missing-eval-split",
        lambda w: w.dataset(w.saved_dataset("saved", train=LINES), eval_split="test"),
        "data.eval_split",
        "'test'",
    ),
    case(
        "data-missing-train-split",
        lambda w: w.dataset(w.saved_dataset("saved", train=LINES), train_split="main"),
        "data.train_split",
        "'main'",
    ),
    case("data-block-beyond-context", lambda w: w.train(data={"block_size": 128}), "data.block_size"),
    # models
    case("model-no-such-folder", lambda w: w.train(model={"name": "./no-such-model"}), "model.name", "./no-such-model"),
    case(
        "model-folder-without-config",
        lambda w: w.train(model={"name": w.folder("empty-model")}),
        "model.name",
        "config.json",
    ),
    case("model-not-gpt2", llama_model, "model.name", "'llama'"),
    case("model-uncached-hub-id", lambda w: w.train(model={"name": "someone/not-cached-model"}), "model.name"),
    case("model-unknown-builtin", lambda w: w.train(model={"name": "builtin:gpt5"}), "model.name", "builtin:gpt5"),
    case("model-without-tokenizer", gpt2_without_tokenizer, "model.name", "no-tokenizer"),
    case("model-pickle-weights-only", gpt2_with_pickle_weights_only, "pickled", "safetensors"),
    case("lora-targets-missing", lambda w: w.train(lora={"targets": ["q_proj"]}), "lora.targets", "q_proj"),
    case("fp16-on-cpu", lambda w: w.train(training={"precision": "fp16"}), "training.precision", marks=NO_CUDA),
    # the store and its adapters
    case("show-unknown-on-a-fresh-store", lambda w: ["adapters", "show", "nope"], "'nope'"),
    case("path-unknown", lambda w: w.stored("adapters", "path", "nope"), "'nope'"),
    case("rm-unknown", lambda w: w.stored("adapters", "rm", "nope", "--yes"), "'nope'"),
    case("show-name-with-dots", lambda w: w.stored("adapters", "show", "../x"), "'../x'"),
    case("path-hidden-name", lambda w: w.stored("adapters", "path", ".hidden"), "'.hidden'"),
    case("rm-name-with-slash", lambda w: w.stored("adapters", "rm", "tiny/x", "--yes"), "'tiny/x'"),
    case("train-into-existing-adapter", lambda w: w.stored(*w.train(**RUN)), "'tiny'", "--overwrite"),
    case("unfinished-run-without-resume", lambda w: w.stored(*w.train(**RUN), unfinished=True), "'tiny'", "--resume"),
    case("resume-with-changed-recipe", changed_recipe_on_resume, "'tiny'", "--allow-changed"),
    case(
        "import-without-adapter-config",
        lambda w: w.import_("elsewhere", None),
        "elsewhere",
        "adapter_config.json",
    ),
    case(
        "import-pickle-only",
        lambda w: w.import_("binonly", lora_config(), weights="adapter_model.bin"),
        "binonly",
        "adapter_model.safetensors",
    ),
    case(
        "import-not-lora",
        lambda w: w.import_("prefix", {"peft_type": "PREFIX_TUNING"}),
        "prefix",
        "PREFIX_TUNING",
    ),
    case(
        "import-without-base",
        lambda w: w.import_("nobase", lora_config()),
        "nobase",
        "--base",
    ),
    case("import-invalid-name", lambda w: w.import_("ok", lora_config(), "--name", ".x"), "'.x'"),
    case("import-over-existing", imported_copy_of_tiny, "'tiny'", "--overwrite"),
    case(
        "import-base-missing",
        lambda w: w.import_("lost", lora_config(base_model_name_or_path="./no-such-base")),
        "--base",
        "./no-such-base",
    ),
    case("adapter-being-trained", being_trained, "'tiny'", "12345"),
    case("import-missing-folder", lambda w: ["adapters", "import", "no-such-folder"], "no-such-folder"),
    # damaged adapters, loaded through the CLI
    case("eval-unknown-adapter", lambda w: w.stored("eval", "--adapter", "nope", "--files", w.valid()), "'nope'"),
    case(
        "eval-adapter-twice",
        lambda w: w.stored("eval", "--adapter", "tiny", "--adapter", "tiny", "--files", w.valid()),
        "named once",
    ),
    case(
        "adapter-truncated-weights",
        damaged_adapter(lambda a: truncate(a / "adapter_model.safetensors")),
        "'tiny'",
        "adapter_model.safetensors",
    ),
    case(
        "adapter-edited-config",
        damaged_adapter(lambda a: edit_json(a / "adapter_config.json", r=8)),
        "'tiny'",
        "adapter_config.json",
    ),
    case(
        "adapter-without-manifest",
        damaged_adapter(lambda a: (a / "manifest.json").unlink()),
        "'tiny'",
        "manifest.json",
    ),
    case("adapter-on-another-base", another_base, "'tiny'", "other-base"),
    case("adapter-base-moved", base_moved, "'tiny'", "moved-away"),
    case(
        "adapter-truncated-weights-forced",
        damaged_adapter(lambda a: truncate(a / "adapter_model.safetensors"), "--allow-unverified"),
        "'tiny'",
        "store/tiny",
    ),
    case(
        "adapter-edited-config-forced",
        damaged_adapter(lambda a: edit_json(a / "adapter_config.json", r=8), "--allow-unverified"),
        "'tiny'",
    ),
    case(
        "generate-truncated-weights",
        damaged_adapter(lambda a: truncate(a / "adapter_model.safetensors"), command="generate"),
        "'tiny'",
        "adapter_model.safetensors",
    ),
    case(
        "generate-truncated-weights-forced",
        damaged_adapter(lambda a: truncate(a / "adapter_model.safetensors"), "--allow-unverified", command="generate"),
        "'tiny'",
        "store/tiny",
    ),
    case(
        "generate-without-manifest",
        damaged_adapter(lambda a: (a / "manifest.json").unlink(), command="generate"),
        "'tiny'",
        "manifest.json",
    ),
    case("generate-unknown-adapter", lambda w: w.stored("generate", "--adapter", "nope", "--prompt", "x"), "'nope'"),
    case(
        "merge-truncated-weights",
        damaged_adapter(lambda a: truncate(a / "adapter_model.safetensors"), command="merge"),
        "'tiny'",
        "adapter_model.safetensors",
    ),
    case(
        "merge-edited-config-forced",
        damaged_adapter(lambda a: edit_json(a / "adapter_config.json", r=8), "--allow-unverified", command="merge"),
        "'tiny'",
    ),
    case(
        "merge-without-manifest",
        damaged_adapter(lambda a: (a / "manifest.json").unlink(), command="merge"),
        "'tiny'",
        "manifest.json",
    ),
    case("merge-unknown-adapter", lambda w: w.stored("merge", "nope", "--out", "merged"), "'nope'"),
    case(
        "merge-over-existing-folder",
        merge_over_a_folder,
        "merged",
        "--overwrite",
    ),
    # the hostile-input round (issue 12): each row names the fault it injects
    case("train-file-empty", lambda w: w.files([w.file("empty.txt", "")], [w.valid()]), "empty.txt", "empty"),
    case("eval-file-empty", lambda w: w.files([str(w.corpus_dir / "train.txt")], [w.file("e.txt", "")]), "e.txt"),
    case("train-file-blank-lines", lambda w: w.files([w.file("blank.txt", "\n  \n\t\n")]), "blank.txt"),
    case("train-jsonl-no-rows", lambda w: w.files([w.file("rows.jsonl", "\n\n")]), "rows.jsonl"),
    case(
        "resume-another-recipe-no-checkpoints", retrain_with_another_recipe_and_no_checkpoints, "'tiny'", "--overwrite"
    ),
    case("eval-csv-into-the-store", csv_into_the_store, "--csv", "adapter store"),
    case("eval-heatmap-into-the-store", heatmap_into_the_store, "--heatmap", "adapter store"),
    case("eval-csv-over-a-file-of-yours", csv_over_a_file_of_yours, "--csv", "--overwrite"),
    case("generate-pickle-weights-allowed-unverified", pickle_in_place_of_weights, "'tiny'", "safetensors"),
    case("show-symlinked-adapter", lambda w: ["adapters", "show", symlinked_adapter(w)], "'evil'", "symbolic link"),
    case("rm-symlinked-adapter", lambda w: ["adapters", "rm", symlinked_adapter(w), "--yes"], "'evil'"),
    case(
        "eval-symlinked-adapter", lambda w: ["eval", "--adapter", symlinked_adapter(w), "--files", w.valid()], "'evil'"
    ),
    case(
        "eval-symlinked-weights-file",
        lambda w: ["eval", "--adapter", symlinked_weights(w), "--files", w.valid()],
        "'tiny'",
        "adapter_model.safetensors",
        "symbolic link",
    ),
    case(
        "generate-symlinked-weights-file",
        lambda w: [*w.generate()[:1], "--adapter", symlinked_weights(w), *w.generate()[3:]],
        "'tiny'",
        "symbolic link",
    ),
    case(
        "train-over-symlinked-adapter",
        lambda w: w.train("--overwrite", **RUN, output={"name": symlinked_adapter(w)}),
        "'evil'",
    ),
    case(
        "show-adapter-copied-under-another-name",
        lambda w: ["adapters", "show", copied_under_another_name(w)],
        "'copy'",
        "'tiny'",
    ),
    case("show-damaged-metrics", lambda w: ["adapters", "show", damaged_records(w)], "'broken'", "metrics.json"),
    case(
        "rm-read-only-store",
        lambda w: ["adapters", "rm", "tiny", "--yes", "--store", read_only_store(w) / "store"],
        "read-only",
    ),
    case(
        "train-read-only-store",
        lambda w: w.train("--store", read_only_store(w) / "store", output={"name": "new"}),
        "read-only",
    ),
    case(
        "import-read-only-store",
        lambda w: [*imported_copy_of_tiny(w), "--name", "t2", "--store", read_only_store(w) / "store"],
        "read-only",
    ),
    case("plan-cache-is-a-file", cache_is_a_file, "GPT2_ADAPT_CACHE", "cache-file"),
    case("plan-cache-read-only", cache_is_read_only, "GPT2_ADAPT_CACHE", "ro-cache"),
    case("store-under-a-file", lambda w: w.train("--store", f"{w.file('afile', 'x')}/sub"), "afile"),
    case(
        "import-config-is-an-array",
        lambda w: ["adapters", "import", w.folder("arr"), w.file("arr/adapter_config.json", "[1, 2]")][:3],
        "arr",
        "JSON object",
    ),
    case("import-sparse-2gib-weights", sparse_weights, "sparse", "adapter_model.safetensors"),
    case(
        "import-rank-of-a-trillion",
        lambda w: w.import_("huge", lora_config(r=10**12, base_model_name_or_path=str(w.tiny_model))),
        "huge",
        "rank",
    ),
    case(
        "import-rank-zero",
        lambda w: w.import_("zero", lora_config(r=0, base_model_name_or_path=str(w.tiny_model))),
        "zero",
        "rank",
    ),
    case(
        "import-dropout-five",
        lambda w: w.import_("drop", lora_config(lora_dropout=5, base_model_name_or_path=str(w.tiny_model))),
        "drop",
        "lora_dropout",
    ),
    case(
        "import-targets-the-base-lacks",
        lambda w: w.import_("llama", lora_config(target_modules=["q_proj"], base_model_name_or_path=str(w.tiny_model))),
        "q_proj",
        "c_attn",
    ),
    case("train-rank-of-a-billion", lambda w: w.train("--set", "lora.r=1000000000"), "lora.r"),
    case(
        "recipe-show-rank-of-a-billion",
        lambda w: ["recipe", "show", w.write_recipe(), "--set", "lora.r=1000000000"],
        "lora.r",
    ),
    case(
        "train-report-to-bogus",
        lambda w: w.train("--set", 'training.report_to=["bogus"]'),
        "training.report_to",
        "bogus",
    ),
    case(
        "recipe-show-report-to-bogus",
        lambda w: ["recipe", "show", w.write_recipe(), "--set", 'training.report_to=["bogus"]'],
        "bogus",
    ),
    case(
        "generate-prompt-file-is-a-binary",
        lambda w: w.stored("generate", "--adapter", "tiny", "--prompt-file", "/bin/ls"),
        "/bin/ls",
        "UTF-8",
    ),
    case("generate-binary-standard-input", binary_standard_input, "standard input", "UTF-8"),
    case("bench-text-is-a-binary", lambda w: ["bench", "--text", "/bin/ls", "--only", "eval"], "/bin/ls", "UTF-8"),
    case(
        "eval-files-empty-file",
        lambda w: w.stored("eval", "--adapter", "tiny", "--files", w.file("none.txt", "")),
        "none.txt",
    ),
    case(
        "eval-files-a-folder",
        lambda w: w.stored("eval", "--adapter", "tiny", "--files", w.folder("texts")),
        "texts",
        "folder",
    ),
    case("store-set-through-the-environment", store_through_the_environment, "'nope'", "GPT2_ADAPT_STORE"),
    case("lora-targets-empty-list", lambda w: w.train(lora={"targets": []}), "lora.targets", "c_attn"),
    case("grad-accum-of-a-billion", lambda w: w.train(training={"grad_accum": 10**9}), "training.grad_accum"),
    case(
        "plan-measure-steps-negative", lambda w: ["plan", w.write_recipe(), "--measure-steps", "-1"], "--measure-steps"
    ),
    case(
        "generate-temperature-inf",
        lambda w: w.stored("generate", "--adapter", "tiny", "--prompt", "x", "--temperature", "inf"),
        "--temperature",
    ),
    case(
        "merge-out-inside-the-store",
        lambda w: w.stored("merge", "tiny", "--out", "store/merged"),
        "--out",
        "adapter store",
    ),
    # prompt/completion data, early stopping, adapter variants, 4-bit (issue 16)
    case(
        "examples-missing-prompt-column",
        lambda w: w.examples([{"question": t, "completion": " x."} for t in LINES]),
        "data.prompt_column",
        "'prompt'",
    ),
    case(
        "examples-missing-completion-column",
        lambda w: w.examples([{"prompt": t, "answer": " x."} for t in LINES]),
        "data.completion_column",
        "'completion'",
    ),
    case(
        "examples-empty-completion",
        lambda w: w.examples([{"prompt": t, "completion": "" if i == 4 else " x."} for i, t in enumerate(LINES)]),
        "data.completion_column",
        "row 5",
    ),
    case(
        "examples-template-without-prompt",
        lambda w: w.examples(QA, template="Question: ?\nAnswer:"),
        "data.template",
        "{prompt}",
    ),
    case(
        "examples-template-with-other-braces",
        lambda w: w.examples(QA, template="{question}: {prompt}"),
        "data.template",
        "{question}",
    ),
    case(
        "examples-longer-than-a-block",
        lambda w: w.examples([*QA[:3], {"prompt": " ".join(LINES), "completion": " x."}, *QA[3:]]),
        "data.block_size",
        "row 4",
    ),
    case(
        "examples-completion-longer-than-a-block",
        lambda w: w.examples([{"prompt": "x", "completion": " ".join(LINES)}, *QA], truncate="prompt_left"),
        "data.block_size",
        "row 1",
    ),
    case(
        "examples-stray-number-among-completions",
        lambda w: w.examples([{**qa, "completion": 4 if i == 1 else qa["completion"]} for i, qa in enumerate(QA)]),
        "data.completion_column",
        "row 2 (a number)",
    ),
    case("examples-unknown-format", lambda w: w.train(data={"format": "chat"}), "data.format", "'chat'"),
    case(
        "examples-key-with-text-format",
        lambda w: w.train(data={"template": "Q: {prompt}"}),
        "data.template",
        "data.format",
    ),
    case("examples-unknown-truncation", lambda w: w.examples(QA, truncate="right"), "data.truncate", "'right'"),
    case("examples-builtin-read-as-text", lambda w: w.dataset("builtin:python-qa"), "data.dataset", "data.format"),
    case("keep-unknown", lambda w: w.train(training={"keep": "first"}), "training.keep", "'first'"),
    case(
        "keep-best-without-evaluations",
        lambda w: w.train(training={"keep": "best", "eval_every": 0}),
        "training.keep",
        "training.eval_every",
    ),
    case(
        "patience-without-evaluations",
        lambda w: w.train(training={"early_stopping_patience": 2, "eval_every": 0}),
        "training.early_stopping_patience",
    ),
    case(
        "patience-negative",
        lambda w: w.train(training={"early_stopping_patience": -1}),
        "training.early_stopping_patience",
    ),
    case(
        "threshold-negative",
        lambda w: w.train(training={"early_stopping_threshold": -0.5}),
        "training.early_stopping_threshold",
    ),
    case("quantization-unknown-mode", lambda w: w.train(quantization={"mode": "nf3"}), "quantization.mode", "'nf3'"),
    case(
        "double-quant-without-4bit",
        lambda w: w.train(quantization={"double_quant": False}),
        "quantization.double_quant",
    ),
    case(
        "dora-on-a-quantized-base-on-a-cpu",
        lambda w: w.train(lora={"use_dora": True}, quantization={"mode": "int8"}),
        "lora.use_dora",
        marks=NO_CUDA,
    ),
    case("generate-int8-and-nf4", lambda w: w.stored(*w.generate("--int8", "--nf4")), "--int8 and --nf4"),
    # the spellings of 0.1, removed in 0.3.0 (CHANGELOG.md): refused before anything runs, naming the replacement
    case("removed-train-force", lambda w: w.train("--force"), "--force was removed in 0.3.0", "--allow-changed"),
    case("removed-eval-force", lambda w: w.eval("--force"), "--force was removed", "--allow-unverified"),
    case("removed-generate-force", lambda w: w.generate("--force"), "--force was removed", "--allow-unverified"),
    case("removed-generate-dtype", lambda w: w.generate("--dtype", "bfloat16"), "--dtype was removed", "--precision"),
    case("removed-merge-force", lambda w: w.merge("--force"), "--force was removed", "--allow-unverified"),
    case("removed-merge-dtype", lambda w: w.merge("--dtype", "bfloat16"), "--dtype was removed", "--precision"),
    case("removed-merge-model", lambda w: w.merge("--model", str(w.tiny_model)), "--model was removed", "--base"),
    case("unknown-option", lambda w: w.train("--forse"), "No such option '--forse'"),
    # --model is a plain model: beside adapters it would be taken for their base, which --base names
    case("eval-model-beside-adapter", lambda w: w.eval("--model", str(w.tiny_model)), "--model and --adapter"),
    case("generate-model-beside-adapter", lambda w: w.generate("--model", str(w.tiny_model)), "--model and --adapter"),
    case(
        "generate-model-beside-mix",
        lambda w: ["generate", "--mix", "tiny=0.5", "--model", str(w.tiny_model), "--prompt", "The"],
        "--model and --mix",
    ),
    # damaged checkpoints, resumed
    case(
        "checkpoint-garbage-trainer-state",
        damaged_checkpoint("trainer_state.json", garbage),
        "checkpoint-10",
        "trainer_state.json",
    ),
    case(
        "checkpoint-truncated-weights",
        damaged_checkpoint("adapter_model.safetensors", truncate),
        "checkpoint-10",
        "adapter_model.safetensors",
    ),
    case(
        "checkpoint-truncated-optimizer",
        damaged_checkpoint("optimizer.pt", truncate),
        "checkpoint-10",
        "optimizer.pt",
    ),
    case(
        "last-checkpoint-garbage-trainer-state",
        damaged_checkpoint("trainer_state.json", garbage, step=20),
        "checkpoint-20",
        "trainer_state.json",
    ),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("trained") / "store"


@pytest.fixture
def world(tmp_path, write_recipe, cli, tiny_model, corpus_dir, trained, monkeypatch):
    world = World(tmp_path, write_recipe, cli, tiny_model, corpus_dir, trained, monkeypatch)
    yield world
    for held in world.held:
        held.close()
    for mount in reversed(world.mounts):
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("setup, names, lines", CASES)
def test_bad_input_is_one_line_per_problem_exit_2_and_changes_nothing(world, cli, tmp_path, setup, names, lines):
    args = setup(world)
    before = snapshot(tmp_path)
    result = cli(*args, input=world.stdin[0] if world.stdin else None)

    output = result.output
    assert "Traceback" not in output
    assert result.exit_code == 2, output
    assert result.stdout == "", output  # nothing half-reported
    shown = result.stderr.strip().splitlines()
    first = next((i for i, line in enumerate(shown) if line.startswith("error:")), None)
    assert first is not None, output
    errors = shown[first:]  # the progress lines before the first error are fine; nothing but errors after
    assert all(line.startswith("error:") for line in errors), output
    assert len(errors) == lines, output
    for line in errors:
        assert any(name in line for name in names), f"{line!r} names none of {names}"
        assert FIX.search(NOT_WORDS.sub(" ", line.removeprefix("error:"))), f"{line!r} names no fix"
    for name in names:
        assert any(name in line for line in errors), f"no error line names {name!r}: {errors}"

    after = snapshot(tmp_path)
    changed = sorted(path for path in before.keys() | after.keys() if before.get(path, 0) != after.get(path, 0))
    assert not changed, f"changed on disk: {changed}"
