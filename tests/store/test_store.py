"""The adapter store and the Python API: list/show/path/rm/import, verified loading, atomic saves, locks.

The adapters come from `trained_adapters` (conftest: trained once per session by `gpt2-adapt train`) and
are copied into each test's store; damage, other bases and other processes are real (files rewritten,
models written, processes killed).
"""

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from helpers import error_lines, tree
from peft import LoraConfig, PeftModel, PrefixTuningConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import toolkit
from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.records import RecordError
from toolkit.sources import builtin
from toolkit.store.manifest import BaseRecord, DataRecord, FileRecord, Manifest, TrainedWith

TEXT = "The cat sees the moon. A dog finds a red ball."
NAMES = ["elsewhere", "poems", "poems8", "quickstart"]  # `trained_adapters` in conftest


@pytest.fixture
def load_warnings(caplog, monkeypatch):
    """caplog for toolkit.store.loading warnings; the CLI stops the 'toolkit' logger propagating, so undo that."""
    monkeypatch.setattr(logging.getLogger("toolkit"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="toolkit.store.loading")
    return caplog


def warnings_of(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "toolkit.store.loading" and r.levelno == logging.WARNING
    ]


def input_ids(tiny_model) -> torch.Tensor:
    return AutoTokenizer.from_pretrained(tiny_model)(TEXT, return_tensors="pt").input_ids


def logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def plain_peft(base_folder, adapter_folder) -> PeftModel:
    """transformers + peft alone, no toolkit code."""
    base = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_folder).eval()


def wait_for(marker: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the helper process exited early: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail("the helper process never became ready")
        time.sleep(0.05)


def start_helper(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


# 1. Listing and show ---------------------------------------------------------------------------------


def test_list_shows_every_adapter_with_its_records(store, cli, tiny_model, other_model):
    """`adapters list` and `--json` report each adapter's base, data, rank, targets, size and perplexities."""
    table = cli("adapters", "list")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "BASE", "DATASET", "RANK", "TARGETS", "SIZE", "PERPLEXITY", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == NAMES

    listed = cli("adapters", "list", "--json")
    assert listed.exit_code == 0
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert sorted(rows) == NAMES
    for name, row in rows.items():
        folder = store / name
        manifest = json.loads((folder / "manifest.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        config = json.loads((folder / "adapter_config.json").read_text())
        assert set(row) == {
            "name",
            "base",
            "dataset",
            "rank",
            "targets",
            "bytes",
            "base_perplexity",
            "adapted_perplexity",
            "created",
            "problems",
            "variant",
            "quantization",
            "format",
        }
        assert row["problems"] == []
        assert row["variant"] == "LoRA" and row["format"] == "text" and row["quantization"] in ("none", "int8")
        assert row["base"] == manifest["base"]["name"]
        assert row["dataset"] == ", ".join(manifest["dataset"]["train_files"])
        assert row["dataset"].endswith("train.txt")
        assert row["rank"] == config["r"]
        assert row["targets"] == sorted(config["target_modules"])
        assert row["bytes"] == sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        assert row["base_perplexity"] == metrics["base"]["perplexity"]
        assert row["adapted_perplexity"] == metrics["adapted"]["perplexity"]
        assert row["created"] == manifest["created"]
        line = next(line for line in lines if line.startswith(name + " "))
        assert f"{metrics['base']['perplexity']:.2f} -> {metrics['adapted']['perplexity']:.2f}" in line
        assert f"  {config['r']}  " in line
        assert Path(row["base"]).name in line  # the base, shortened from the left
    assert rows["quickstart"]["base"] == rows["poems"]["base"] == str(tiny_model.resolve())
    assert rows["elsewhere"]["base"] == str(other_model.resolve())
    assert (rows["quickstart"]["rank"], rows["quickstart"]["targets"]) == (2, ["c_attn", "c_fc", "c_proj"])
    assert (rows["poems"]["rank"], rows["poems"]["targets"]) == (4, ["c_attn"])


def test_show_path_and_rm(store, cli):
    """`show --json` holds every record, `path` prints the folder, `rm` asks first and deletes checkpoints too."""
    shown = cli("adapters", "show", "quickstart", "--json")
    assert shown.exit_code == 0
    info = json.loads(shown.stdout)
    folder = store / "quickstart"
    assert info["manifest"] == json.loads((folder / "manifest.json").read_text())
    assert info["metrics"] == json.loads((folder / "metrics.json").read_text())
    assert info["recipe"] == (folder / "recipe.toml").read_text()
    assert info["files"] == {p.name: p.stat().st_size for p in folder.iterdir()}
    assert "adapter_model.safetensors" in info["files"] and "manifest.json" in info["files"]

    readable = cli("adapters", "show", "quickstart")
    assert readable.exit_code == 0
    assert info["manifest"]["base"]["weights_sha256"] in readable.stdout

    path = cli("adapters", "path", "quickstart")
    assert path.exit_code == 0
    assert path.stdout.strip() == str(folder)

    assert (store / ".checkpoints" / "quickstart").is_dir()
    before = tree(folder)
    declined = CliRunner().invoke(main, ["adapters", "rm", "quickstart"], input="n\n")
    assert declined.exit_code == 1 and "delete adapter quickstart" in declined.output
    assert tree(folder) == before

    removed = cli("adapters", "rm", "quickstart", "--yes")
    assert removed.exit_code == 0
    assert not folder.exists() and not (store / ".checkpoints" / "quickstart").exists()
    assert (store / "poems").is_dir() and (store / ".checkpoints" / "poems").is_dir()
    remaining = [row["name"] for row in json.loads(cli("adapters", "list", "--json").stdout)]
    assert remaining == [n for n in NAMES if n != "quickstart"]
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".")) == [".checkpoints", ".locks"]


@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["path"], ["rm", "--yes"]])
def test_unknown_name_is_one_error_line(store, cli, command):
    """Asking for an adapter that is not there exits 2 with one line naming it and the store's contents."""
    result = cli("adapters", command[0], "nosuch", *command[1:])
    assert result.exit_code == 2
    assert len(error_lines(result.output)) == 1, result.output
    assert "'nosuch'" in error_lines(result.output)[0] and ", ".join(NAMES) in result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in store.iterdir() if not p.name.startswith(".")) == NAMES


# 2. The Python API -----------------------------------------------------------------------------------


def test_load_reproduces_plain_peft_logits(store, tiny_model):
    """toolkit.load gives exactly the logits of transformers + peft loading the CLI's adapter by hand."""
    ids = input_ids(tiny_model)
    model, tokenizer = toolkit.load("quickstart")
    assert tokenizer(TEXT, return_tensors="pt").input_ids.equal(ids)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token
    expected = logits(plain_peft(tiny_model, store / "quickstart"), ids)
    assert torch.equal(logits(model, ids), expected)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    assert not torch.allclose(expected, logits(base, ids))  # the adapter changes something


def test_load_several_adapters_switch_and_disable(store, tiny_model):
    """A list loads each adapter once under its name, the first active; set_adapter and disable_adapter work."""
    ids = input_ids(tiny_model)
    model, _ = toolkit.load(["quickstart", "poems"])
    assert set(model.peft_config) == {"quickstart", "poems"} and model.active_adapter == "quickstart"
    assert torch.equal(logits(model, ids), logits(plain_peft(tiny_model, store / "quickstart"), ids))

    model.set_adapter("poems")
    poems_alone, _ = toolkit.load("poems")
    assert torch.equal(logits(model, ids), logits(poems_alone, ids))
    assert torch.equal(logits(model, ids), logits(plain_peft(tiny_model, store / "poems"), ids))

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    with model.disable_adapter():
        assert torch.equal(logits(model, ids), logits(base, ids))
    assert not torch.equal(logits(model, ids), logits(base, ids))  # enabled again on leaving


def test_adapters_of_different_bases_are_not_loaded_together(store):
    """'elsewhere' was trained on another base: loading it beside 'quickstart' names both bases."""
    with pytest.raises(ToolkitError, match="different bases") as refused:
        toolkit.load(["quickstart", "elsewhere"])
    assert "quickstart on" in str(refused.value) and "elsewhere on" in str(refused.value)
    with pytest.raises(ToolkitError, match="named once"):
        toolkit.load(["quickstart", "quickstart"])


def test_adapter_store_api(store):
    """AdapterStore() reads $GPT2_ADAPT_STORE: names, info, path and remove."""
    adapters = toolkit.AdapterStore()
    assert adapters.root == store
    assert adapters.names() == NAMES
    info = adapters.info("quickstart")
    folder = store / "quickstart"
    assert info.path == str(folder) and adapters.path("quickstart") == folder
    assert info.metrics == json.loads((folder / "metrics.json").read_text())
    assert info.manifest.name == "quickstart" and info.adapter_config["r"] == 2
    assert info.bytes == sum(info.files.values()) == sum(p.stat().st_size for p in folder.iterdir())
    assert info.recipe == (folder / "recipe.toml").read_text()
    assert info.problems == []

    adapters.remove("poems")
    assert adapters.names() == [n for n in NAMES if n != "poems"]
    assert not (store / "poems").exists() and not (store / ".checkpoints" / "poems").exists()
    with pytest.raises(ToolkitError, match="'poems'"):
        adapters.info("poems")
    assert toolkit.AdapterStore(store).names() == adapters.names()


# 3. Refusals -----------------------------------------------------------------------------------------


def test_another_base_of_the_same_shapes_is_refused(store, tiny_model, other_model, load_warnings):
    """Same shapes and tokenizer, other weights: refused naming the weights; strict=False loads onto it."""
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart", base=str(other_model))
    message = str(refused.value)
    assert len(refused.value.problems) == 1, message  # only the weights differ, not the tokenizer
    assert "other weights" in message and str(other_model) in message and "'quickstart'" in message
    assert not warnings_of(load_warnings)

    model, _ = toolkit.load("quickstart", base=str(other_model), strict=False)
    assert any("other weights" in w for w in warnings_of(load_warnings))
    ids = input_ids(tiny_model)
    assert torch.equal(logits(model, ids), logits(plain_peft(other_model, store / "quickstart"), ids))


def test_a_changed_tokenizer_is_refused(store, tiny_model, tmp_path, load_warnings):
    """Same weights, one added token: refused naming the tokenizer; strict=False loads with that tokenizer."""
    copy = tmp_path / "retokenized"
    shutil.copytree(tiny_model, copy)
    tokenizer = AutoTokenizer.from_pretrained(copy)
    assert tokenizer.add_tokens(["<extra>"]) == 1
    tokenizer.save_pretrained(copy)
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart", base=str(copy))
    assert len(refused.value.problems) == 1, str(refused.value)  # the weights' content is the same
    assert "tokenizer" in str(refused.value) and "differs" in str(refused.value)

    model, loaded_tokenizer = toolkit.load("quickstart", base=str(copy), strict=False)
    assert any("tokenizer" in w for w in warnings_of(load_warnings))
    assert "<extra>" in loaded_tokenizer.get_vocab()
    ids = input_ids(tiny_model)
    assert torch.equal(logits(model, ids), logits(plain_peft(tiny_model, store / "quickstart"), ids))


DELETED = "base_model.model.transformer.h.1.mlp.c_fc.lora_B.weight"


def delete_tensor(folder: Path) -> None:
    tensors = load_file(folder / "adapter_model.safetensors")
    del tensors[DELETED]
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})


def truncate(folder: Path) -> None:
    weights = folder / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])


def edit_config(folder: Path) -> None:
    """lora_alpha 4 -> 5: the same size, so only the sha256 tells."""
    path = folder / "adapter_config.json"
    text, edits = re.subn(r'"lora_alpha": 4(\.0)?,', lambda m: m.group(0).replace("4", "5"), path.read_text())
    assert edits == 1
    path.write_text(text)


def add_pickle(folder: Path) -> None:
    (folder / "adapter_model.bin").write_bytes(b"not a pickle: loading this would fail")


def drop_manifest(folder: Path) -> None:
    (folder / "manifest.json").unlink()


@pytest.mark.parametrize(
    "damage, expected",
    [
        (delete_tensor, "adapter_model.safetensors has"),
        (edit_config, "adapter_config.json was modified"),
        (add_pickle, "adapter_model.bin is not in the manifest"),
    ],
    ids=["deleted-tensor", "edited-config", "extra-bin"],
)
def test_a_damaged_adapter_is_refused_and_loads_with_strict_false(store, tiny_model, load_warnings, damage, expected):
    """Each kind of damage is refused with a message naming it; strict=False loads anyway, with a warning."""
    ids = input_ids(tiny_model)
    intact = logits(plain_peft(tiny_model, store / "quickstart"), ids)
    damage(store / "quickstart")
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart")
    assert expected in str(refused.value) and "'quickstart'" in str(refused.value)
    assert not warnings_of(load_warnings)

    model, _ = toolkit.load("quickstart", strict=False)
    assert any(expected in w for w in warnings_of(load_warnings)), warnings_of(load_warnings)
    if damage is delete_tensor:  # peft leaves the missing lora_B at its initial zeros
        layer = model.base_model.model.transformer.h[1].mlp.c_fc
        assert torch.count_nonzero(layer.lora_B["quickstart"].weight) == 0
        assert not torch.equal(logits(model, ids), intact)
    elif damage is edit_config:  # the edited scaling is what got loaded
        assert model.peft_config["quickstart"].lora_alpha == 5
        assert not torch.equal(logits(model, ids), intact)
    else:  # the .bin is never read: junk in it would fail any attempt
        assert torch.equal(logits(model, ids), intact)


def test_a_deleted_tensor_is_named(store):
    """The README promises that a missing tensor is named, not only the file that lost it."""
    delete_tensor(store / "quickstart")
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart")
    assert f"tensor {DELETED} is missing" in str(refused.value)


def test_a_truncated_file_is_refused_even_with_strict_false(store, load_warnings):
    """Half of adapter_model.safetensors: refused naming the file and its size; strict=False cannot load
    half a file either, and says so as a ToolkitError rather than a library traceback."""
    size = (store / "quickstart" / "adapter_model.safetensors").stat().st_size
    truncate(store / "quickstart")
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart")
    expected = f"adapter_model.safetensors has {size // 2} bytes, {size} were written (truncated"
    assert expected in str(refused.value)

    with pytest.raises(ToolkitError) as forced:
        toolkit.load("quickstart", strict=False)
    assert "'quickstart'" in str(forced.value) and str(store / "quickstart") in str(forced.value)
    assert any(expected in w for w in warnings_of(load_warnings))


def test_an_adapter_without_manifest_is_refused(store, tiny_model, load_warnings):
    """No manifest.json: refused naming it (with or without base=); strict=False loads onto the base that
    peft's adapter_config.json names."""
    ids = input_ids(tiny_model)
    intact = logits(plain_peft(tiny_model, store / "quickstart"), ids)
    drop_manifest(store / "quickstart")
    for base in (None, str(tiny_model)):
        with pytest.raises(ToolkitError) as refused:
            toolkit.load("quickstart", base=base)
        assert re.search(r"has no (readable )?manifest\.json", str(refused.value)), str(refused.value)
        assert "adapters import" in str(refused.value) and "'quickstart'" in str(refused.value)

    model, _ = toolkit.load("quickstart", strict=False)
    assert warnings_of(load_warnings)
    assert torch.equal(logits(model, ids), intact)


def test_an_adapter_without_manifest_warns_only_of_the_manifest(store, load_warnings):
    """strict=False on an adapter without manifest warns that it has none, not of differences never recorded."""
    drop_manifest(store / "quickstart")
    toolkit.load("quickstart", strict=False)
    warned = warnings_of(load_warnings)
    assert len(warned) == 1 and re.search(r"has no (readable )?manifest\.json", warned[0]), warned


# 4. and 5. Other processes ---------------------------------------------------------------------------

SAVE_AND_HANG = """
import sys, time
from pathlib import Path
from toolkit.store.store import AdapterStore
root, name, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with AdapterStore(root).saving(name) as tmp:
    (tmp / "adapter_config.json").write_text("{}")
    (tmp / "adapter_model.safetensors").write_bytes(b"junk" * 4096)
    (tmp / "manifest.json").write_text("{}")
    marker.write_text(str(tmp))
    time.sleep(300)
"""

LOCK_AND_HANG = """
import sys, time
from pathlib import Path
from toolkit.store.store import AdapterStore
root, name, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])
with AdapterStore(root).lock(name):
    marker.write_text("locked")
    time.sleep(300)
"""


@pytest.mark.slow
def test_a_save_killed_midway_leaves_the_previous_adapter(store, cli, tiny_model, tmp_path):
    """SIGKILL while a new 'quickstart' is being written: the old one stays, byte for byte, and still loads."""
    before = tree(store / "quickstart")
    marker = tmp_path / "ready"
    proc = start_helper(SAVE_AND_HANG, store, "quickstart", marker)
    try:
        wait_for(marker, proc)
        leftover = Path(marker.read_text())
        assert leftover.parent == store and leftover.name.startswith(".tmp-quickstart-")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert (leftover / "adapter_config.json").is_file()  # it died mid-save, its folder left behind
    assert tree(store / "quickstart") == before
    model, _ = toolkit.load("quickstart")
    ids = input_ids(tiny_model)
    assert torch.equal(logits(model, ids), logits(plain_peft(tiny_model, store / "quickstart"), ids))
    listed = cli("adapters", "list", "--json")
    assert [row["name"] for row in json.loads(listed.stdout)] == NAMES
    table = cli("adapters", "list").stdout
    assert ".tmp" not in table and len(table.splitlines()) == 1 + len(NAMES)
    assert toolkit.AdapterStore().names() == NAMES


@pytest.mark.slow
def test_a_second_process_saving_the_same_name_fails_at_once(store, cli, write_recipe, tmp_path):
    """While another process holds a name, training it exits 2 at once; once that process dies, it trains."""
    recipe = write_recipe(output={"name": "quickstart"}, training={"max_steps": 2})
    before = tree(store / "quickstart")
    marker = tmp_path / "locked"
    proc = start_helper(LOCK_AND_HANG, store, "quickstart", marker)
    try:
        wait_for(marker, proc)
        started = time.monotonic()
        refused = cli("train", recipe, "--overwrite")
        assert time.monotonic() - started < 20
        assert refused.exit_code == 2
        assert "another process" in refused.output and f"pid {proc.pid}" in refused.output
        assert len(error_lines(refused.output)) == 1, refused.output
        assert tree(store / "quickstart") == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    trained = cli("train", recipe, "--overwrite")  # the kernel released the dead process's lock
    assert trained.exit_code == 0, trained.output
    assert json.loads((store / "quickstart" / "metrics.json").read_text())["train"]["steps"] == 2
    assert tree(store / "quickstart") != before


@pytest.mark.slow
def test_rm_refuses_a_name_that_a_running_process_holds(store, cli, tmp_path):
    """Fault: `adapters rm` while another process holds the name (a run training it): exit 2 naming that
    process's pid; the adapter and its checkpoints stay. Once the process is gone, rm works."""
    marker = tmp_path / "locked"
    proc = start_helper(LOCK_AND_HANG, store, "poems", marker)
    try:
        wait_for(marker, proc)
        before = tree(store)
        refused = cli("adapters", "rm", "poems", "--yes")
        assert refused.exit_code == 2
        [line] = error_lines(refused.output)
        assert f"pid {proc.pid}" in line and "'poems'" in line and "before removing" in line
        assert tree(store) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    removed = cli("adapters", "rm", "poems", "--yes")
    assert removed.exit_code == 0, removed.output
    assert not (store / "poems").exists()


# 6. Names --------------------------------------------------------------------------------------------


def test_a_symlinked_or_damaged_adapter_is_marked_in_the_listing_and_the_others_listed(store, cli, tmp_path):
    """Faults: store/evil is a symbolic link to a folder outside the store; store/broken has a metrics.json
    that is a JSON array and a recipe.toml that is not UTF-8. `list` exits 0, shows every sound adapter as
    before and marks these two with what is wrong; nothing is read or removed through the link."""
    shutil.copytree(store / "poems", tmp_path / "outside" / "evil")
    (store / "evil").symlink_to(tmp_path / "outside" / "evil")
    shutil.copytree(store / "quickstart", store / "broken")
    manifest = json.loads((store / "broken" / "manifest.json").read_text())
    (store / "broken" / "manifest.json").write_text(json.dumps({**manifest, "name": "broken"}))
    (store / "broken" / "metrics.json").write_text("[1, 2, 3]")
    (store / "broken" / "recipe.toml").write_bytes("name = 'caf\xe9'".encode("latin-1"))

    listed = cli("adapters", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert sorted(rows) == sorted([*NAMES, "evil", "broken"])
    assert all(rows[name]["problems"] == [] for name in NAMES)
    assert any("symbolic link" in p for p in rows["evil"]["problems"])
    assert any("metrics.json" in p for p in rows["broken"]["problems"])
    assert any("recipe.toml is not UTF-8" in p for p in rows["broken"]["problems"])
    table = cli("adapters", "list")
    assert table.exit_code == 0 and "2 damaged" in table.stderr
    assert [line.split()[0] for line in table.stdout.splitlines()[1:]] == sorted([*NAMES, "evil", "broken"])
    assert "DAMAGED" in next(line for line in table.stdout.splitlines() if line.startswith("evil"))

    assert cli("adapters", "show", "broken").exit_code == 2
    refused = cli("adapters", "rm", "evil", "--yes")
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert (tmp_path / "outside" / "evil" / "adapter_model.safetensors").is_file()
    assert [p.name for p in store.iterdir() if p.name.startswith((".removing", ".old", ".tmp"))] == []


@pytest.mark.parametrize("name", ["../x", ".hidden", "a" * 65, "a/b", "v1.2", "", "x\n"])
def test_invalid_names_are_refused(name):
    """Names that could leave the store, hide, or break peft's module keys are refused before any file access."""
    with pytest.raises(ToolkitError, match="is not valid"):
        toolkit.load(name)
    with pytest.raises(ToolkitError, match="is not valid"):
        toolkit.AdapterStore().path(name)
    with pytest.raises(ToolkitError, match="is not valid"):
        toolkit.AdapterStore().remove(name)


def test_a_64_character_name_is_valid():
    """The limit is 64 characters, inclusive."""
    assert toolkit.AdapterStore().path("a" * 64).name == "a" * 64


def test_cli_refuses_a_path_as_a_name(store, cli):
    """`adapters show ../x` exits 2 with one error line and does not reach the adapter sitting at ../x."""
    shutil.copytree(store / "quickstart", store.parent / "x")
    for command in (["show", "../x"], ["path", "../x"], ["rm", "../x", "--yes"]):
        result = cli("adapters", *command)
        assert result.exit_code == 2
        assert len(error_lines(result.output)) == 1 and "'../x'" in result.output
    assert (store.parent / "x" / "adapter_config.json").is_file()


# 7. Import -------------------------------------------------------------------------------------------


@pytest.fixture
def peft_adapter(tiny_model, tmp_path):
    """A LoRA adapter made with plain peft and saved by save_pretrained: (folder, the in-memory model)."""
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    config = LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM")
    model = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    folder = tmp_path / "elsewhere" / "my-lora"
    model.save_pretrained(folder)
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_model)
    return folder, model.eval()


def test_import_brings_in_a_peft_adapter(store, cli, peft_adapter, tiny_model):
    """An imported adapter gets a manifest, appears in the list, and loads to plain peft's exact logits."""
    folder, peft_model = peft_adapter
    result = cli("adapters", "import", folder, "--name", "ext")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(store / "ext")
    manifest = json.loads((store / "ext" / "manifest.json").read_text())
    assert manifest["base"]["name"] == str(tiny_model.resolve())
    assert set(manifest["files"]) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    text = (store / "ext" / "manifest.json").read_text()
    assert json.dumps(Manifest.from_json(json.loads(text)).to_json(), indent=2) == text  # the import's kind too
    copied = (store / "ext" / "adapter_model.safetensors").read_bytes()
    assert copied == (folder / "adapter_model.safetensors").read_bytes()
    rows = {row["name"]: row for row in json.loads(cli("adapters", "list", "--json").stdout)}
    assert sorted(rows) == sorted(NAMES + ["ext"])
    assert rows["ext"]["rank"] == 2 and rows["ext"]["targets"] == ["c_attn"]
    assert rows["ext"]["dataset"] == str(folder.resolve())

    ids = input_ids(tiny_model)
    model, _ = toolkit.load("ext")
    assert torch.equal(logits(model, ids), logits(peft_model, ids))

    again = cli("adapters", "import", folder, "--name", "ext")
    assert again.exit_code == 2 and "already exists" in again.output
    assert len(error_lines(again.output)) == 1
    assert cli("adapters", "import", folder, "--name", "ext", "--overwrite").exit_code == 0

    default_name = cli("adapters", "import", folder)
    assert default_name.exit_code == 0, default_name.output
    assert toolkit.AdapterStore().names() == sorted(NAMES + ["ext", "my-lora"])


def test_import_with_another_base_than_its_config_names_warns(store, cli, peft_adapter, other_model):
    """The adapter's config names one base, --base another of the same shapes: imported, with a warning that
    says which was checked (the manifest records the one given)."""
    folder, _ = peft_adapter
    result = cli("adapters", "import", folder, "--name", "checked", "--base", other_model)
    assert result.exit_code == 0, result.output
    assert "names its base" in result.stderr and str(other_model) in result.stderr
    manifest = json.loads((store / "checked" / "manifest.json").read_text())
    assert manifest["base"]["name"] == str(other_model.resolve())


def test_import_onto_a_base_of_other_shapes_is_refused(store, cli, peft_adapter, corpus_dir, tmp_path):
    """An adapter for 32 dimensions checked against a 48-dimension base: exit 2 naming the shapes."""
    folder, _ = peft_adapter
    wide = tmp_path / "wide-base"
    builtin.write_gpt2(wide, [corpus_dir / "train.txt"], vocab_size=300, n_positions=64, n_embd=48, n_layer=2, n_head=2)
    before = tree(store)
    result = cli("adapters", "import", folder, "--name", "ext", "--base", wide)
    assert result.exit_code == 2
    lines = error_lines(result.output)
    assert lines and all("c_attn" in line and "shape" in line for line in lines), result.output
    assert "needs [2, 48]" in result.output
    assert tree(store) == before


def test_import_refuses_pickles_and_non_lora_adapters(store, cli, peft_adapter, tiny_model, tmp_path):
    """Only safetensors LoRA folders with a config are imported; anything else exits 2 and writes nothing."""
    _, peft_model = peft_adapter
    pickled = tmp_path / "pickled"
    peft_model.save_pretrained(pickled, safe_serialization=False)
    assert (pickled / "adapter_model.bin").is_file() and not (pickled / "adapter_model.safetensors").exists()

    no_config = tmp_path / "no-config"
    no_config.mkdir()
    shutil.copy(peft_adapter[0] / "adapter_model.safetensors", no_config)

    prefix = tmp_path / "prefix"
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    get_peft_model(base, PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")).save_pretrained(prefix)

    before = tree(store)
    for folder, expected in ((pickled, "safetensors"), (no_config, "adapter_config.json"), (prefix, "PREFIX_TUNING")):
        result = cli("adapters", "import", folder, "--name", "ext")
        assert result.exit_code == 2, result.output
        assert len(error_lines(result.output)) == 1 and expected in result.output, result.output
    assert "LoRA" in result.output
    assert tree(store) == before


# 8. The manifest record ------------------------------------------------------------------------------


def test_a_manifest_written_by_training_reads_back_to_the_same_file(store):
    """Manifest.to_json of a parsed manifest is the file training wrote, byte for byte (json.dumps, indent 2,
    as written); the record it reads is the one the store gives."""
    for name in NAMES:
        text = (store / name / "manifest.json").read_text()
        manifest = Manifest.from_json(json.loads(text))
        assert json.dumps(manifest.to_json(), indent=2) == text, name
        assert Manifest.from_json(manifest.to_json()) == manifest == toolkit.AdapterStore().info(name).manifest
    assert Manifest.from_json(json.loads((store / "poems8" / "manifest.json").read_text())).trained_with == (
        TrainedWith(quantization="int8")
    )


def test_every_kind_of_manifest_round_trips():
    """from_json(to_json(m)) == m for each kind of data (hub dataset, files, import) and of training."""
    base = BaseRecord("gpt2", "0123abc", "w" * 64, "t" * 64)
    files = {"adapter_model.safetensors": FileRecord("s" * 64, 1234)}
    kinds = [
        (DataRecord("Salesforce/wikitext", "wikitext-2-raw-v1", "train", "validation", text_column="text"), None),
        (DataRecord(dataset="tiny-stories"), TrainedWith("nf4", use_dora=True, format="examples", template="Q: ")),
        (DataRecord(train_files=("/a.txt",), eval_files=("/b.txt",), fingerprint="f"), TrainedWith(template="")),
        (DataRecord(imported_from="/elsewhere/adapter"), None),
    ]
    for dataset, trained_with in kinds:
        manifest = Manifest(
            "x", "2026-12-07T10:00:00+00:00", base, dataset, None, files, {"w": [2, 8]}, {"torch": "2.13"}, trained_with
        )
        written = json.loads(json.dumps(manifest.to_json()))
        assert Manifest.from_json(written) == manifest
        assert ("template" in written.get("trained_with", {})) == (
            trained_with is not None and trained_with.template is not None
        )
    assert DataRecord("Salesforce/wikitext", "wikitext-2-raw-v1").label == "Salesforce/wikitext (wikitext-2-raw-v1)"


def test_keys_a_later_version_writes_are_kept_and_written_back():
    """An older toolkit reading a newer manifest keeps what it does not know, so re-writing loses nothing."""
    base = BaseRecord("gpt2", "main", "w" * 64, "t" * 64)
    manifest = Manifest("x", "2026-12-07T10:00:00+00:00", base, DataRecord(dataset="d"), None, {}, {})
    written = manifest.to_json() | {"signed_by": {"key": "abc"}, "license": "mit"}
    read = Manifest.from_json(json.loads(json.dumps(written)))
    assert read.later_keys == {"signed_by": {"key": "abc"}, "license": "mit"}
    assert read.to_json() == written


DAMAGES = [
    ({"created": 12345}, "manifest.json is damaged: created is '12345', not a date and time (ISO 8601)"),
    ({"created": "yesterday"}, "manifest.json is damaged: created is 'yesterday', not a date and time (ISO 8601)"),
    ({"base": {"name": 5}}, "manifest.json is damaged: base.name is '5', not text"),
    ({"base": "gpt2"}, "manifest.json is damaged: base is 'gpt2', not an object"),
    ({"files": []}, "manifest.json is damaged: files is '[]', not an object"),
    ({"tensors": None}, "manifest.json is damaged: tensors is 'None', not an object"),
    (
        {"trained_with": {"use_dora": "yes"}},
        "manifest.json is damaged: trained_with.use_dora is 'yes', not true or false",
    ),
    (
        {"dataset": {"train_files": "a.txt"}},
        "manifest.json is damaged: dataset.train_files is 'a.txt', not a list of text",
    ),
]


@pytest.mark.parametrize("damage, message", DAMAGES, ids=[next(iter(d)) + str(i) for i, (d, _) in enumerate(DAMAGES)])
def test_a_damaged_manifest_is_one_line_naming_the_field(store, damage, message):
    path = store / "quickstart" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    with pytest.raises(RecordError) as parsed:
        Manifest.from_json(json.loads(path.read_text()))
    assert str(parsed.value) == message
    info = toolkit.AdapterStore().info("quickstart")
    assert info.manifest is None and info.problems == [message]


def test_a_damaged_manifest_is_refused_by_load_and_show(store, cli, load_warnings):
    path = store / "quickstart" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "created": 12345}))
    message = "manifest.json is damaged: created is '12345', not a date and time (ISO 8601)"
    with pytest.raises(ToolkitError) as refused:
        toolkit.load("quickstart")
    assert str(refused.value) == f"adapter 'quickstart': {message}; pass strict=False to load it anyway"
    toolkit.load("quickstart", strict=False)  # onto the base its adapter_config names
    assert [w for w in warnings_of(load_warnings) if message in w]
    shown = cli("adapters", "show", "quickstart")  # last: the CLI stops the toolkit logger propagating
    assert shown.exit_code == 2 and error_lines(shown.stderr) == [
        f"error: adapter 'quickstart': {message}; retrain it or remove it"
    ]


def test_a_missing_key_is_named(store):
    data = json.loads((store / "quickstart" / "manifest.json").read_text())
    del data["tensors"]
    with pytest.raises(RecordError, match=r"^manifest.json is damaged: it has no tensors$"):
        Manifest.from_json(data)


def test_base_for_is_the_base_most_adapters_record(store, tiny_model, other_model):
    """One rule for the base of several adapters: the one given, else the one most of them record (a tie:
    the first named's), at the revision they record for it; an adapter without a readable manifest counts
    with the base its adapter_config names."""
    adapters = toolkit.AdapterStore()
    tiny, other = str(tiny_model.resolve()), str(other_model.resolve())
    assert adapters.base_for(["quickstart"]) == adapters.info("quickstart").manifest.base
    assert adapters.base_for(["elsewhere", "quickstart", "poems"]).name == tiny
    assert adapters.base_for(["elsewhere", "quickstart"]).name == other
    assert adapters.base_for(["elsewhere"], base="gpt2") == BaseRecord("gpt2", "main")
    assert adapters.base_for([]) is None

    config = json.loads((store / "poems" / "adapter_config.json").read_text())
    (store / "poems" / "adapter_config.json").write_text(json.dumps({**config, "revision": "v2"}))
    path = store / "poems" / "manifest.json"
    path.write_text(path.read_text().replace('"revision": "main"', '"revision": "v2"'))
    assert adapters.base_for(["quickstart", "poems"], base=tiny) == BaseRecord(tiny, "main")
    assert adapters.base_for(["poems", "poems8", "quickstart"]).revision == "main"
    assert adapters.base_for(["poems", "quickstart"]).revision == "v2"
    assert adapters.base_for(["quickstart", "poems", "poems"], base=tiny).revision == "v2"
    path.unlink()  # peft's config names the base (with the revision written into it above)
    assert adapters.base_for(["poems"]) == BaseRecord(config["base_model_name_or_path"], "v2")
    (store / "elsewhere" / "manifest.json").write_text('{"name": "elsewhere"}')  # damaged: peft's config
    assert adapters.base_for(["elsewhere"]) == BaseRecord(other, "main")
    (store / "elsewhere" / "adapter_config.json").write_text("{}")  # and nothing names a base
    assert adapters.base_for(["elsewhere"]) is None
