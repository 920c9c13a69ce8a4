"""One vocabulary on every command: the library names parameters, the CLI prints its options for them, and
the spellings of 0.1 keep working for this release with a warning."""

import re

import pytest
from helpers import error_lines

import toolkit


def warned(result, old: str, new: str) -> bool:
    return f"warning: {old} is deprecated; use {new}" in result.stderr


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


def test_allow_unverified_and_the_old_force_load_a_damaged_adapter(store, cli):
    (store / "quickstart" / "README.md").write_text("edited by hand\n")
    args = ["generate", "--adapter", "quickstart", "--prompt", "The", "--greedy", "--max-new-tokens", "3"]
    new = cli(*args, "--allow-unverified")
    old = cli(*args, "--force")
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert new.stdout == old.stdout and new.stdout.strip()
    assert warned(old, "--force", "--allow-unverified") and not warned(new, "--force", "--allow-unverified")


def test_base_is_the_adapters_base_and_model_beside_adapter_still_works(store, cli, tiny_model, corpus_dir):
    common = ["eval", "--adapter", "quickstart", "--files", corpus_dir / "valid.txt", "--max-tokens", 100, "--json"]
    new = cli(*common, "--base", tiny_model)
    old = cli(*common, "--model", tiny_model)
    assert new.exit_code == old.exit_code == 0, new.output + old.output
    assert re.sub(r'"(seconds|tokens_per_second)": [\d.e-]+', "", new.stdout) == re.sub(
        r'"(seconds|tokens_per_second)": [\d.e-]+', "", old.stdout
    )
    assert warned(old, "--model with --adapter", "--base")
    both = cli("eval", "--model", tiny_model, "--base", tiny_model, "--files", corpus_dir / "valid.txt")
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
    new, old = cli(*args, "--precision", "bf16"), cli(*args, "--dtype", "bfloat16")
    assert new.exit_code == old.exit_code == 0 and new.stdout == old.stdout
    assert warned(old, "--dtype bfloat16", "--precision bf16")
    merged = cli("merge", "quickstart", "--out", tmp_path / "new", "--precision", "bf16", "--json")
    legacy = cli("merge", "quickstart", "--out", tmp_path / "old", "--dtype", "bfloat16")
    assert merged.exit_code == legacy.exit_code == 0, merged.output + legacy.output
    assert '"precision": "bf16"' in merged.stdout and warned(legacy, "--dtype bfloat16", "--precision bf16")
    assert (tmp_path / "new" / "model.safetensors").read_bytes() == (
        tmp_path / "old" / "model.safetensors"
    ).read_bytes()


def test_allow_changed_and_the_old_force_resume_a_changed_run(cli, write_recipe):
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
    resumed = cli("train", changed, "--resume", "--force")
    assert resumed.exit_code == 0, resumed.output
    assert warned(resumed, "--force", "--allow-changed")


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
