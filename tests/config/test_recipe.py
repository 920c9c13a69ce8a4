"""Recipes: TOML into frozen dataclasses, defaults, `--set` overrides, validation, round trips, `recipe show`."""

import dataclasses
import tomllib
import typing
from pathlib import Path

import pytest
import torch

from toolkit.config.names import NAME_PATTERN
from toolkit.config.recipe import DataSpec, LoraSpec, ModelSpec, Recipe, load_recipe, section_classes
from toolkit.errors import ToolkitError

MINIMAL = '[data]\ndataset = "builtin:python-docs"\n'


def write_toml(text: str, name: str = "raw.toml") -> Path:
    """A recipe file with exactly this text, in the test's working directory."""
    Path(name).write_text(text)
    return Path(name)


def problems_of(path, overrides=()) -> list[str]:
    with pytest.raises(ToolkitError) as info:
        load_recipe(path, overrides)
    return info.value.problems


# ---------------------------------------------------------------- parsing and defaults


def test_a_full_recipe_lands_in_frozen_dataclasses(write_recipe, tiny_model, corpus_dir):
    """Every value reaches its field, ints for float keys become floats, and nothing can be reassigned."""
    path = write_recipe(
        model={"revision": "v1"},
        data={"text_column": "body", "eval_fraction": 0.1},
        training={"epochs": 3, "scheduler": "cosine", "report_to": ["tensorboard"], "gradient_checkpointing": True},
    )
    recipe = load_recipe(path)
    assert recipe.model == ModelSpec(name=str(tiny_model), revision="v1")
    assert recipe.data.train_files == [str(corpus_dir / "train.txt")]
    assert recipe.data.eval_files == [str(corpus_dir / "valid.txt")]
    assert (recipe.data.text_column, recipe.data.eval_fraction, recipe.data.block_size) == ("body", 0.1, 32)
    assert recipe.lora == LoraSpec(r=4, alpha=8.0, dropout=0.0, targets="all")
    t = recipe.training
    assert (t.max_steps, t.batch_size, t.learning_rate, t.save_every, t.scheduler) == (30, 8, 1e-2, 10, "cosine")
    assert t.report_to == ["tensorboard"] and t.gradient_checkpointing is True
    assert type(recipe.lora.alpha) is float and type(t.epochs) is float and t.epochs == 3.0
    assert recipe.adapter_name == "tiny"
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lora.r = 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.lora = LoraSpec()


def test_missing_keys_take_their_defaults():
    """A recipe naming only a dataset is the all-defaults Recipe, and float keys default to floats."""
    recipe = load_recipe(write_toml(MINIMAL))
    assert recipe == Recipe(data=DataSpec(dataset="builtin:python-docs"))
    assert recipe.output.name == "" and recipe.adapter_name == "python-docs"
    assert (recipe.model.name, recipe.lora.r, recipe.lora.alpha, recipe.training.learning_rate) == (
        "gpt2",
        16,
        32.0,
        2e-4,
    )
    for cls in section_classes().values():
        for f in dataclasses.fields(cls):
            if typing.get_type_hints(cls)[f.name] is float:
                assert type(f.default) is float, f"{cls.__name__}.{f.name} defaults to {f.default!r}"


@pytest.mark.parametrize(
    "data, slug",
    [
        ({"dataset": "Salesforce/wikitext", "config": "wikitext-103-raw-v1"}, "wikitext-103-raw-v1"),
        ({"dataset": "Salesforce/wikitext"}, "wikitext"),
        ({"dataset": "builtin:python-docs"}, "python-docs"),
        ({"dataset": "./corpora/My Notes/"}, "my-notes"),
        ({"dataset": "data/.corpus"}, "corpus"),
        ({"train_files": ["notes/*.txt"]}, "notes"),
        ({"train_files": ["data/Lecture Notes.jsonl", "more.txt"]}, "lecture-notes"),
        ({"train_files": ["_draft.txt"]}, "draft"),
    ],
)
def test_default_adapter_name_is_a_valid_slug_of_the_data(data, slug):
    """With no output.name the adapter is named after the data, and that name passes the store's own rule."""
    name = Recipe(data=DataSpec(**data)).adapter_name
    assert name == slug
    assert NAME_PATTERN.fullmatch(name)


@pytest.mark.parametrize(
    "targets, modules",
    [
        ("attn", ["c_attn"]),
        ("attn+proj", ["attn.c_attn", "attn.c_proj"]),
        ("all", ["c_attn", "c_proj", "c_fc"]),
        (["c_attn", "mlp.c_fc"], ["c_attn", "mlp.c_fc"]),
    ],
)
def test_targets_presets_and_custom_lists(write_recipe, targets, modules):
    recipe = load_recipe(write_recipe(lora={"targets": targets}))
    assert recipe.target_modules == modules
    recipe.target_modules.append("oops")  # a copy: the preset table is not changed through it
    assert recipe.target_modules == modules


# ---------------------------------------------------------------- --set overrides


@pytest.mark.parametrize(
    "override, section, key, value",
    [
        ("lora.r=8", "lora", "r", 8),
        ("lora.alpha=16", "lora", "alpha", 16.0),
        ("training.learning_rate=3e-4", "training", "learning_rate", 3e-4),
        ("training.gradient_checkpointing=true", "training", "gradient_checkpointing", True),
        ('training.report_to=["tensorboard"]', "training", "report_to", ["tensorboard"]),
        ("model.name=gpt2-medium", "model", "name", "gpt2-medium"),
        ("lora.targets=attn+proj", "lora", "targets", "attn+proj"),
        ('model.revision="v1.0"', "model", "revision", "v1.0"),
        ("model.revision='main'", "model", "revision", "main"),
        (" lora.r = 2 ", "lora", "r", 2),
        ("quantization.mode=none", "quantization", "mode", "none"),  # a section the file does not have
    ],
)
def test_set_overrides_parse_like_toml_or_as_bare_strings(write_recipe, override, section, key, value):
    recipe = load_recipe(write_recipe(), [override])
    got = getattr(getattr(recipe, section), key)
    assert got == value and type(got) is type(value)


def test_later_overrides_win(write_recipe):
    assert load_recipe(write_recipe(), ["lora.r=8", "lora.r=2"]).lora.r == 2


@pytest.mark.parametrize(
    "override, key, fragment",
    [
        ("lora.r=abc", "lora.r", "must be an integer (got 'abc')"),
        ("lora.r=2.5", "lora.r", "must be an integer"),
        ("training.gradient_checkpointing=yes", "training.gradient_checkpointing", "true or false"),
        ("lora.rank=8", "lora.rank", "unknown key"),
        ("lora.r=0", "lora.r", "must be between 1 and 4096"),
    ],
)
def test_overrides_are_checked_like_the_file(write_recipe, override, key, fragment):
    path = write_recipe()
    [problem] = problems_of(path, [override])
    assert problem.startswith(f"{path}: {key}: ") and fragment in problem


@pytest.mark.parametrize("override", ["lora", "a.b.c=1", "=8", "lora.=8", ".r=8", "lora r 8"])
def test_malformed_overrides_are_errors(write_recipe, override):
    path = write_recipe()
    [problem] = problems_of(path, [override])
    assert problem == f"{path}: overrides {override!r}: expected section.key=value, e.g. lora.r=8"


# ---------------------------------------------------------------- validation

BAD = [
    ({"lora": {"r": "8"}}, "lora.r", "must be an integer"),
    ({"lora": {"r": True}}, "lora.r", "must be an integer"),
    ({"lora": {"r": 4.0}}, "lora.r", "must be an integer"),
    ({"lora": {"alpha": "8"}}, "lora.alpha", "must be a number"),
    ({"lora": {"alpha": True}}, "lora.alpha", "must be a number"),
    ({"lora": {"targets": 3}}, "lora.targets", "must be a string or a list of strings"),
    ({"model": {"name": 5}}, "model.name", "must be a string"),
    ({"data": {"train_files": ["a.txt", 1]}}, "data.train_files", "must be a list of strings"),
    ({"data": {"train_files": "a.txt"}}, "data.train_files", "must be a list of strings"),
    ({"training": {"gradient_checkpointing": 1}}, "training.gradient_checkpointing", "must be true or false"),
    ({"lora": {"r": 0}}, "lora.r", "must be between 1 and 4096"),
    ({"lora": {"alpha": 0}}, "lora.alpha", "must be > 0"),
    ({"lora": {"dropout": 1.0}}, "lora.dropout", "must be in [0, 1)"),
    ({"lora": {"dropout": -0.1}}, "lora.dropout", "must be in [0, 1)"),
    ({"lora": {"targets": "mlp"}}, "lora.targets", "is not a preset"),
    ({"lora": {"targets": []}}, "lora.targets", "is empty"),
    ({"model": {"name": "  "}}, "model.name", "must name"),
    ({"data": {"eval_fraction": 0}}, "data.eval_fraction", "between 0 and 1"),
    ({"data": {"eval_fraction": 1}}, "data.eval_fraction", "between 0 and 1"),
    ({"data": {"block_size": 1}}, "data.block_size", "at least 2"),
    ({"data": {"text_column": ""}}, "data.text_column", "must not be empty"),
    ({"training": {"learning_rate": 0}}, "training.learning_rate", "must be > 0"),
    ({"training": {"warmup_ratio": 1.0}}, "training.warmup_ratio", "must be in [0, 1)"),
    ({"training": {"batch_size": 0}}, "training.batch_size", "must be >= 1"),
    ({"training": {"eval_batch_size": -1}}, "training.eval_batch_size", "must be >= 0"),
    ({"training": {"grad_accum": 0}}, "training.grad_accum", "must be >= 1"),
    ({"training": {"max_steps": 0}}, "training.max_steps", "must be -1"),
    ({"training": {"max_steps": -2}}, "training.max_steps", "must be -1"),
    ({"training": {"epochs": 0}}, "training.epochs", "must be > 0"),
    ({"training": {"save_every": 0}}, "training.save_every", "must be >= 1"),
    ({"training": {"keep_checkpoints": 0}}, "training.keep_checkpoints", "must be >= 1"),
    ({"training": {"weight_decay": -0.1}}, "training.weight_decay", "must be >= 0"),
    ({"training": {"precision": "fp8"}}, "training.precision", "must be one of auto, fp32, bf16, fp16"),
    ({"training": {"scheduler": "step"}}, "training.scheduler", "must be one of linear, cosine"),
    ({"quantization": {"mode": "int4"}}, "quantization.mode", "must be one of none, int8"),
    ({"output": {"name": "../x"}}, "output.name", "not a valid adapter name"),
    ({"output": {"name": ".hidden"}}, "output.name", "not a valid adapter name"),
    ({"output": {"name": "a" * 65}}, "output.name", "not a valid adapter name"),
    ({"output": {"name": "a/b"}}, "output.name", "not a valid adapter name"),
    ({"output": {"name": "v1.2"}}, "output.name", "not a valid adapter name"),  # peft names cannot hold a dot
    pytest.param({"output": {"name": "tiny\n"}}, "output.name", "not a valid adapter name"),
    pytest.param({"training": {"learning_rate": float("nan")}}, "training.learning_rate", ""),
    ({"data": {"dataset": "Salesforce/wikitext"}}, "data.dataset and data.train_files", "not both"),
    ({"data": {"train_files": [], "eval_files": []}}, "data.dataset", "give a dataset or data.train_files"),
    ({"data": {"dataset": "Salesforce/wikitext", "train_files": []}}, "data.eval_files", "only with data.train_files"),
    ({"data": {"config": "wikitext-2-raw-v1"}}, "data.config", "only with data.dataset"),
]


@pytest.mark.parametrize("sections, key, fragment", BAD)
def test_each_invalid_value_is_one_problem_naming_its_key(write_recipe, sections, key, fragment):
    path = write_recipe(**sections)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: {key}: ") and fragment in problem


@pytest.mark.parametrize(
    "sections",
    [
        {"lora": {"r": 1, "dropout": 0.0}},
        {"data": {"block_size": 2, "eval_fraction": 0.5}},
        {"training": {"max_steps": -1, "warmup_ratio": 0.0, "eval_batch_size": 0, "eval_every": 0, "max_grad_norm": 0}},
        {"output": {"name": "a" * 64}},
        {"output": {"name": "v1-2_final-run"}},
        {"output": {"name": ""}},
        {"training": {"precision": "bf16", "scheduler": "constant_with_warmup"}},
    ],
)
def test_values_at_the_edge_of_each_range_are_accepted(write_recipe, sections):
    """The checks are not off by one: each boundary value loads."""
    load_recipe(write_recipe(**sections))


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without CUDA")
def test_fp16_without_cuda_is_refused(write_recipe):
    path = write_recipe(training={"precision": "fp16"})
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: training.precision: ") and "CUDA" in problem


@pytest.mark.parametrize(
    "sections, key, hint",
    [
        ({"lora": {"rank": 8}}, "lora.rank", "(valid: r, alpha, dropout, targets, use_dora, use_rslora)"),
        ({"lora": {"alhpa": 8}}, "lora.alhpa", "(did you mean 'alpha'?)"),
        ({"training": {"learning_rte": 1e-3}}, "training.learning_rte", "(did you mean 'learning_rate'?)"),
        ({"trainig": {"epochs": 1}}, "trainig", "unknown section (did you mean 'training'?)"),
        ({"extras": {"x": 1}}, "extras", "(valid: model, data, lora, quantization, training, output)"),
    ],
)
def test_unknown_names_get_the_closest_valid_one(write_recipe, sections, key, hint):
    path = write_recipe(**sections)
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: {key}: unknown ") and problem.endswith(hint)


def test_validation_reports_every_problem_at_once(write_recipe):
    """Several problems of one stage come back together, each on its own line, prefixed and keyed."""
    path = write_recipe(lora={"rank": 8, "r": "x"}, trainig={"epochs": 1}, model={"name": 3})
    with pytest.raises(ToolkitError) as info:
        load_recipe(path, ["a.b.c=1", "training.batch_size=oops"])
    problems = info.value.problems
    assert str(info.value) == "\n".join(problems)
    keys = ["overrides 'a.b.c=1'", "trainig", "model.name", "lora.rank", "lora.r", "training.batch_size"]
    assert sorted(p.split(": ")[1] for p in problems) == sorted(keys)
    assert all(p.startswith(f"{path}: ") and "\n" not in p for p in problems)

    path = write_recipe(
        lora={"r": 0, "dropout": 1.0}, training={"batch_size": 0, "scheduler": "step"}, data={"config": "c"}
    )
    keys = ["data.config", "lora.r", "lora.dropout", "training.batch_size", "training.scheduler"]
    assert sorted(p.split(": ")[1] for p in problems_of(path)) == sorted(keys)


@pytest.mark.parametrize("lora, key", [({"rank": 8}, "lora.rank"), ({"r": "x"}, "lora.r")])
def test_a_typo_does_not_hide_an_out_of_range_value(write_recipe, lora, key):
    """One run shows the typo and the range problem, not one after the other."""
    path = write_recipe(lora=lora, training={"batch_size": 0})
    assert sorted(p.split(": ")[1] for p in problems_of(path)) == [key, "training.batch_size"]


def test_a_section_that_is_not_a_table_is_an_error():
    path = write_toml(MINIMAL.replace("[data]", "lora = 8\n[data]"))
    assert problems_of(path) == [f"{path}: lora: must be a table ([lora])"]


# ---------------------------------------------------------------- unreadable files


def test_malformed_toml_names_the_file_and_line():
    path = write_toml('[data]\ndataset = "x"\n[lora]\nr = \n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}: not valid TOML: ") and "line 4" in problem


def test_a_missing_recipe_file_is_a_clear_error():
    assert problems_of("nope.toml") == [
        "nope.toml: no such recipe file; pass the path of a .toml recipe (see recipes/)"
    ]


def test_a_non_utf8_file_is_a_clear_error():
    Path("latin1.toml").write_bytes(MINIMAL.encode() + '[model]\nname = "café"\n'.encode("latin-1"))
    assert problems_of("latin1.toml") == ["latin1.toml: not a UTF-8 text file; save the recipe as UTF-8 text"]


# ---------------------------------------------------------------- round trip and fingerprint


@pytest.mark.parametrize("minimal", [False, True], ids=["full", "defaults"])
def test_to_toml_round_trips_and_the_fingerprint_is_stable(write_recipe, minimal):
    if minimal:
        path = write_toml(MINIMAL)
    else:
        path = write_recipe(lora={"targets": ["c_attn", "c_fc"]}, training={"report_to": ["tensorboard"], "epochs": 2})
    recipe = load_recipe(path)
    text = recipe.to_toml()
    assert {s: set(keys) for s, keys in tomllib.loads(text).items()} == {
        s: {f.name for f in dataclasses.fields(cls)} for s, cls in section_classes().items()
    }
    again = load_recipe(write_toml(text, "again.toml"))
    assert again.fingerprint() == recipe.fingerprint() == load_recipe(path).fingerprint()
    assert len(recipe.fingerprint()) == 64 and again.to_toml() == text
    assert again == recipe if not minimal else again.output.name == recipe.adapter_name == "python-docs"
    assert load_recipe(path, ["lora.dropout=0.2"]).fingerprint() != recipe.fingerprint()


# ---------------------------------------------------------------- the CLI


def test_recipe_show_prints_the_resolved_recipe_as_toml(write_recipe, cli):
    result = cli("recipe", "show", write_recipe(), "--set", "lora.r=8")
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    assert set(shown) == set(section_classes())
    assert "r = 8\n" in result.stdout and shown["lora"]["r"] == 8
    assert shown["training"]["keep_checkpoints"] == 2 and shown["output"]["name"] == "tiny"  # defaults filled in
    assert result.stderr == ""


def test_recipe_show_on_an_invalid_recipe_exits_2_with_one_error_line_per_problem(write_recipe, cli):
    path = write_recipe(lora={"r": 0}, training={"batch_size": 0})
    result = cli("recipe", "show", path, "--set", "lora")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"error: {path}: ") for line in lines)
    assert {line.split(": ")[2] for line in lines} == {"--set 'lora'", "lora.r", "training.batch_size"}
    assert result.stdout == "" and "Traceback" not in result.output


def test_recipe_show_on_a_missing_file_exits_2(cli):
    result = cli("recipe", "show", "nope.toml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: nope.toml: no such recipe file") and "Traceback" not in result.output


# ---------------------------------------------------------------- documentation


def test_a_recipe_that_starts_with_a_byte_order_mark_is_read(write_recipe):
    """Fault: an editor saved the recipe as UTF-8 with a BOM; it once failed with "Invalid statement (line 1,
    column 1)". The mark is not part of the TOML."""
    path = write_recipe()
    plain = load_recipe(path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_recipe(path) == plain
