"""`gpt2-adapt train` end to end: the real CLI, peft, the Trainer and bitsandbytes on a tiny GPT-2."""

import json
import math
import shutil
import time
import tomllib
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import tree
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from toolkit.data.streams import TokenStream

ADAPTER_FILES = {
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "manifest.json",
    "metrics.json",
    "metrics.jsonl",
    "recipe.toml",
    "training.png",
}


@torch.no_grad()
def eval_perplexity_by_hand(model, store: Path, name: str) -> tuple[float, int]:
    """The evaluation text the run scored (found through the packed-data fingerprint in metrics.json),
    scored by plain torch as the disjoint protocol defines: window k, ids[kB : kB + B], predicts
    ids[kB + 1 : kB + B + 1]; what is left is predicted by the last B tokens before the last one."""
    metrics = json.loads((store / name / "metrics.json").read_text())
    ids = torch.from_numpy(TokenStream.load(Path("cache") / "packed" / metrics["data"]["fingerprint"] / "eval.npz").ids)
    block, full = metrics["protocol"]["context"], (len(ids) - 1) // metrics["protocol"]["context"]
    logp = torch.log_softmax(model(input_ids=ids[: full * block].view(full, block)).logits.double(), -1)
    nll = -logp.gather(-1, ids[1 : full * block + 1].view(full, block, 1)).sum().item()
    left = len(ids) - 1 - full * block
    if left:
        logp = torch.log_softmax(model(input_ids=ids[-1 - block : -1][None]).logits[0].double(), -1)
        nll -= logp[-left:].gather(-1, ids[-left:, None]).sum().item()
    return math.exp(nll / (len(ids) - 1)), len(ids) - 1


def test_train_writes_a_complete_adapter_that_plain_peft_loads(write_recipe, cli, tiny_model):
    result = cli("train", write_recipe(training={"precision": "fp32"}))  # fp32: compared exactly below
    assert result.exit_code == 0, result.output
    store = Path("store")
    assert sorted(p.name for p in store.iterdir()) == [".checkpoints", ".locks", "tiny"]  # no temporary folder left
    assert {p.name for p in (store / "tiny").iterdir()} == ADAPTER_FILES

    metrics = json.loads((store / "tiny" / "metrics.json").read_text())
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    assert {k: metrics["protocol"][k] for k in ("kind", "context", "stride", "by_document")} == {
        "kind": "disjoint",
        "context": 32,
        "stride": 32,
        "by_document": False,
    }
    assert metrics["train"]["steps"] == 30
    assert metrics["train"]["tokens"] == 30 * 8 * 32  # steps x batch x block: packed, no padding
    assert metrics["train"]["seconds"] > 0
    assert f"{metrics['adapted']['perplexity']:.3f}" in result.output
    resolved = tomllib.loads((store / "tiny" / "recipe.toml").read_text())
    assert resolved["lora"]["r"] == 4 and resolved["output"]["name"] == "tiny"

    # No toolkit code from here: transformers + peft load the adapter and reproduce the adapted perplexity.
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, store / "tiny")
    by_hand, tokens = eval_perplexity_by_hand(model.eval(), store, "tiny")
    assert by_hand == pytest.approx(metrics["adapted"]["perplexity"], rel=1e-5)
    assert tokens == metrics["adapted"]["tokens"]


def test_same_seed_gives_identical_adapter_tensors(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 12})
    assert cli("train", recipe, "--store", "a").exit_code == 0
    assert cli("train", recipe, "--store", "b").exit_code == 0
    first = load_file("a/tiny/adapter_model.safetensors")
    second = load_file("b/tiny/adapter_model.safetensors")
    assert first.keys() == second.keys() and len(first) == 16  # A and B for 8 layers
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(second[k].abs().sum() > 0 for k in second if "lora_B" in k)  # it did train

    other = write_recipe("other.toml", training={"max_steps": 12, "seed": 7})
    assert cli("train", other, "--store", "c").exit_code == 0
    third = load_file("c/tiny/adapter_model.safetensors")
    assert not all(torch.equal(first[k], third[k]) for k in first)


def test_int8_base_trains_on_cpu(write_recipe, cli, tiny_model):
    result = cli("train", write_recipe(quantization={"mode": "int8"}, training={"max_steps": 10}))
    assert result.exit_code == 0, result.output
    config = json.loads(Path("store/tiny/adapter_config.json").read_text())
    assert config["fan_in_fan_out"] is False  # Linear8bitLt has the normal layout, unlike GPT-2's Conv1D
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    weights = load_file("store/tiny/adapter_model.safetensors")
    assert any(w.abs().sum() > 0 for k, w in weights.items() if "lora_B" in k)


def test_fp32_adapter_records_conv1d_layout(write_recipe, cli):
    assert cli("train", write_recipe(training={"max_steps": 2})).exit_code == 0
    assert json.loads(Path("store/tiny/adapter_config.json").read_text())["fan_in_fan_out"] is True


def test_bf16_mixed_precision_trains_on_cpu(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 6, "precision": "bf16"})
    result = cli("train", recipe)
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["precision"] == "bf16"
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    # Both evaluations ran under bf16 autocast, the base's (before the Trainer prepared the model) too:
    # within bf16 rounding of the fp32 figure, but not equal to it.
    base = tomllib.loads(recipe.read_text())["model"]["name"]
    fp32 = json.loads(cli("eval", "--recipe", recipe, "--model", base, "--json").stdout)[0]
    assert metrics["base"]["tokens"] == fp32["tokens"]
    assert metrics["base"]["perplexity"] == pytest.approx(fp32["perplexity"], rel=1e-2)
    # (fp32 under both differs by ~2e-8, from the order of the sums; bf16 autocast moves it by ~2e-5)
    assert metrics["base"]["perplexity"] != pytest.approx(fp32["perplexity"], rel=1e-6)
    weights = load_file("store/tiny/adapter_model.safetensors")
    assert all(w.dtype == torch.float32 for w in weights.values())  # autocast: the adapter stays fp32


def test_existing_adapter_is_refused_then_overwritten(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 4})
    assert cli("train", recipe).exit_code == 0
    before = tree(Path("store"))
    old = load_file("store/tiny/adapter_model.safetensors")

    refused = cli("train", recipe)
    assert refused.exit_code == 2
    assert "already exists" in refused.output and "--overwrite" in refused.output
    assert tree(Path("store")) == before

    changed = write_recipe("changed.toml", training={"max_steps": 4, "learning_rate": 5e-2})
    assert cli("train", changed, "--overwrite").exit_code == 0
    assert tomllib.loads(Path("store/tiny/recipe.toml").read_text())["training"]["learning_rate"] == 5e-2
    new = load_file("store/tiny/adapter_model.safetensors")
    assert any(not torch.equal(old[k], new[k]) for k in old)
    assert sorted(p.name for p in Path("store").iterdir()) == [".checkpoints", ".locks", "tiny"]


def test_resume_continues_from_the_newest_checkpoint_and_matches_an_uninterrupted_run(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 30, "save_every": 10, "keep_checkpoints": 3})
    assert cli("train", recipe, "--store", "whole").exit_code == 0
    assert cli("train", recipe).exit_code == 0
    # Simulate a run that died after step 20: no adapter, no step-30 checkpoint.
    shutil.rmtree("store/tiny")
    shutil.rmtree("store/.checkpoints/tiny/checkpoint-30")
    refused = cli("train", recipe)
    assert refused.exit_code == 2 and "--resume" in refused.output

    resumed = cli("train", recipe, "--resume")
    assert resumed.exit_code == 0, resumed.output
    whole = load_file("whole/tiny/adapter_model.safetensors")
    again = load_file("store/tiny/adapter_model.safetensors")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    whole_metrics = json.loads(Path("whole/tiny/metrics.json").read_text())
    metrics = json.loads(Path("store/tiny/metrics.json").read_text())
    assert metrics["train"]["steps"] == 30 and metrics["train"]["tokens"] == whole_metrics["train"]["tokens"]
    assert metrics["adapted"]["perplexity"] == pytest.approx(whole_metrics["adapted"]["perplexity"], rel=1e-9)


def test_resume_of_a_finished_run_changes_nothing(write_recipe, cli):
    recipe = write_recipe(training={"max_steps": 10, "save_every": 5})
    assert cli("train", recipe).exit_code == 0
    before = tree(Path("store"))
    again = cli("train", recipe, "--resume")
    assert again.exit_code == 0
    assert "nothing to do" in again.output
    assert tree(Path("store")) == before


def test_resume_after_the_final_checkpoint_saves_without_training_more(write_recipe, cli):
    """A run killed between its last checkpoint and the adapter save: resume saves, with no extra step."""
    recipe = write_recipe(training={"max_steps": 10, "save_every": 5})
    assert cli("train", recipe, "--store", "whole").exit_code == 0
    assert cli("train", recipe).exit_code == 0
    shutil.rmtree("store/tiny")
    assert cli("train", recipe, "--resume").exit_code == 0
    whole = load_file("whole/tiny/adapter_model.safetensors")
    again = load_file("store/tiny/adapter_model.safetensors")
    assert all(torch.equal(whole[k], again[k]) for k in whole)
    assert json.loads(Path("store/tiny/metrics.json").read_text())["train"]["steps"] == 10


def test_resume_without_checkpoints_starts_fresh(write_recipe, cli):
    result = cli("train", write_recipe(training={"max_steps": 3}), "--resume")
    assert result.exit_code == 0
    assert "starting fresh" in result.output
    assert Path("store/tiny/adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "sections, key",
    [
        ({"data": {"train_files": ["missing/*.txt"]}}, "data.train_files"),
        ({"data": {"block_size": 128}}, "data.block_size"),  # the tiny model has 64 positions
        ({"data": {"text_column": "body"}}, "data.text_column"),
        ({"model": {"name": "gpt2"}}, "model.name"),  # not cached, and the Hub is offline in tests
        ({"model": {"name": "./no-such-model"}}, "model.name"),
        ({"lora": {"targets": ["q_proj"]}}, "lora.targets"),
        ({"training": {"precision": "fp16"}}, "training.precision"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(write_recipe, cli, sections, key):
    if key == "training.precision" and torch.cuda.is_available():
        pytest.skip("fp16 is valid with CUDA")
    started = time.monotonic()
    result = cli("train", write_recipe(**sections))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert any(key in line and line.startswith(("error:", "recipe")) for line in lines), result.output
    assert "Traceback" not in result.output
    assert not Path("store").exists()
    assert time.monotonic() - started < 20  # the offline Hub check answers at once, not after retries


def test_empty_training_file_is_refused(write_recipe, cli, tmp_path):
    (tmp_path / "empty.txt").write_text("\n   \n")
    result = cli("train", write_recipe(data={"train_files": ["empty.txt"], "eval_files": []}))
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output
    assert not Path("store").exists()


def test_python_qa_recipe_trains_on_examples_offline(cli, builtin_base):
    """The shipped prompt/completion example: builtin:python-qa on builtin:tiny-gpt2, the best adapter kept."""
    recipe = REPO / "recipes" / "python-qa.toml"
    result = cli("train", recipe, "--set", "training.max_steps=10", "--set", "training.eval_every=5")
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("store/python-qa/metrics.json").read_text())
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    assert metrics["protocol"]["kind"] == "examples" and metrics["kept"]["keep"] == "best"
    assert metrics["data"]["train"]["padding"] < 0.05


@pytest.mark.parametrize("name", ["wikitext103", "wikitext2", "local-text", "quickstart", "python-qa"])
def test_shipped_recipes_are_valid(cli, name):
    recipe = REPO / "recipes" / f"{name}.toml"
    assert recipe.read_text().startswith("#")  # each starts with a comment saying how to run it
    assert "Run:" in recipe.read_text().split("\n[")[0]
    result = cli("recipe", "show", recipe)
    assert result.exit_code == 0, result.output
