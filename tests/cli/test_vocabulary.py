"""One vocabulary on every command: the library names parameters, the CLI prints its options for them, and
the spellings of 0.1 are gone (CHANGELOG.md, 0.3.0): a keyword fails as any unknown keyword does, and an
option is refused with what replaces it."""

import inspect

import pytest
from helpers import error_lines
from safetensors import safe_open

import toolkit


def test_a_library_error_names_the_parameter_and_the_cli_the_option(store, cli):
    """A damaged adapter: Python is told `strict=False`, the command line `--allow-unverified`."""
    (store / "quickstart" / "adapter_config.json").write_text(
        (store / "quickstart" / "adapter_config.json").read_text().replace('"r": 2', '"r": 2 ')
    )
    with pytest.raises(toolkit.ToolkitError) as refused:
        toolkit.load("quickstart")
    assert "pass strict=False to load it anyway" in str(refused.value)
    assert "\x00" not in str(refused.value)
    result = cli("generate", "--adapter", "quickstart", "--prompt", "The", "--greedy", "--max-new-tokens", "2")
    assert result.exit_code == 2
    [line] = error_lines(result.stderr)
    assert "pass --allow-unverified to load it anyway" in line and "\x00" not in result.output


def test_allow_unverified_loads_a_damaged_adapter(store, cli):
    (store / "quickstart" / "README.md").write_text("edited by hand\n")
    args = ["generate", "--adapter", "quickstart", "--prompt", "The", "--greedy", "--max-new-tokens", "3"]
    refused, loaded = cli(*args), cli(*args, "--allow-unverified")
    assert refused.exit_code == 2 and "--allow-unverified" in refused.stderr
    assert loaded.exit_code == 0 and loaded.stdout.strip(), loaded.output


def test_base_is_the_adapters_base_and_model_a_plain_model(store, cli, tiny_model, corpus_dir):
    common = ["eval", "--files", corpus_dir / "valid.txt", "--max-tokens", 100, "--json"]
    adapted = cli(*common, "--adapter", "quickstart", "--base", tiny_model)
    plain = cli(*common, "--model", tiny_model)
    assert adapted.exit_code == plain.exit_code == 0, adapted.output + plain.output
    assert '"quickstart"' in adapted.stdout and '"quickstart"' not in plain.stdout
    both = cli(*common, "--model", tiny_model, "--base", tiny_model)
    assert both.exit_code == 2 and "give one" in both.stderr


def test_one_precision_vocabulary_on_eval_generate_and_merge(store, cli, tmp_path, corpus_dir):
    evaluated = cli(
        "eval",
        "--adapter",
        "quickstart",
        "--files",
        corpus_dir / "valid.txt",
        "--max-tokens",
        60,
        "--precision",
        "bf16",
        "--json",
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert '"precision": "bf16"' in evaluated.stdout
    args = ["generate", "--adapter", "quickstart", "--prompt", "The", "--greedy", "--max-new-tokens", "3"]
    generated = cli(*args, "--precision", "bf16")
    assert generated.exit_code == 0 and generated.stdout.strip(), generated.output
    merged = cli("merge", "quickstart", "--out", tmp_path / "merged", "--precision", "bf16", "--json")
    assert merged.exit_code == 0, merged.output
    assert '"precision": "bf16"' in merged.stdout
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="pt") as f:
        assert str(f.get_slice("transformer.h.0.attn.c_attn.weight").get_dtype()) == "BF16"


def test_allow_changed_resumes_a_changed_run(cli, write_recipe):
    recipe = write_recipe(training={"max_steps": 20, "save_every": 10})
    assert cli("train", recipe).exit_code == 0
    # An unfinished run whose recipe then changes: keep checkpoint 10 only, and change the learning rate.
    changed = write_recipe("changed.toml", training={"max_steps": 20, "save_every": 10, "learning_rate": 5e-3})
    import shutil
    from pathlib import Path

    shutil.rmtree(Path("store") / ".checkpoints" / "tiny" / "checkpoint-20")
    shutil.rmtree(Path("store") / "tiny")
    refused = cli("train", changed, "--resume")
    assert refused.exit_code == 2 and "--allow-changed" in refused.stderr
    resumed = cli("train", changed, "--resume", "--allow-changed")
    assert resumed.exit_code == 0, resumed.output


def test_every_command_that_reports_a_result_has_json(cli):
    from toolkit.cli import main

    def walk(command, path=()):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    without = [
        " ".join(path)
        for path, command in walk(main)
        if path not in (("adapters", "path"), ("adapters", "rm"), ("serve",))  # serve runs until stopped
        and "--json" not in {opt for p in command.params for opt in getattr(p, "opts", [])}
    ]
    assert without == []


# The command line's spellings of 0.1, removed in 0.3.0, are refused before anything runs (the exit code and
# the line naming the replacement are checked for every one in test_bad_input.py); here the library's keywords.
REMOVED_KEYWORDS = [
    ("train", {"force": True}, "allow_changed"),
    ("load", {"int8": True}, "precision"),
    ("load", {"dtype": "bfloat16"}, "precision"),
    ("merge", {"dtype": "bfloat16"}, "precision"),
]


@pytest.mark.parametrize(("function", "keyword", "instead"), REMOVED_KEYWORDS)
def test_a_removed_keyword_is_an_unknown_keyword_and_its_replacement_is_there(tmp_path, function, keyword, instead):
    """`instead`: the keyword that CHANGELOG.md names in its place."""
    args = {"train": (None,), "load": ("quickstart",), "merge": ("quickstart", tmp_path / "out")}[function]
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{next(iter(keyword))}'"):
        getattr(toolkit, function)(*args, **keyword)
    assert not (tmp_path / "out").exists()
    assert instead in inspect.signature(getattr(toolkit, function)).parameters
