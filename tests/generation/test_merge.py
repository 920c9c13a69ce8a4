"""Merging adapters into a standalone model: exact against the unmerged adapters, int8-trained adapters
merged at full precision, weighted merges, dtypes, and a folder plain transformers loads without peft.

Real peft and transformers on the tiny GPT-2; the adapters come from `trained_adapters` (conftest).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import error_lines
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import toolkit

FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
}


def batches(vocab: int = 300) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(vocab, (2, 64), generator=generator) for _ in range(3)]


def max_difference(a, b) -> float:
    with torch.inference_mode():
        return max((a(input_ids=ids).logits - b(input_ids=ids).logits).abs().max().item() for ids in batches())


def saved_dtype(folder: Path) -> torch.dtype:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return f.get_tensor("transformer.h.0.attn.c_attn.weight").dtype


def test_merged_logits_equal_the_unmerged_adapter(store, tmp_path, tiny_model):
    result = toolkit.merge("quickstart", tmp_path / "merged")
    assert {p.name for p in (tmp_path / "merged").iterdir()} == FILES
    assert result.precision == "fp32" and saved_dtype(tmp_path / "merged") == torch.float32  # the base's own
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    unmerged, _ = toolkit.load("quickstart")
    assert max_difference(merged, unmerged) <= 1e-5
    base, _ = toolkit.load(base=str(tiny_model))
    assert max_difference(merged, base) > 1e-3  # the update is in the weights


def test_an_int8_trained_adapter_is_merged_at_full_precision(store, cli, tmp_path, tiny_model):
    """The merge equals the adapter applied by peft to the fp32 base, and says how it was done."""
    from peft import PeftModel

    result = cli("merge", "poems8", "--out", tmp_path / "merged", "--verify")
    assert result.exit_code == 0, result.output
    assert "poems8 was trained on a quantized base: merged into the base reloaded at full precision" in result.stdout
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    fp32_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), store / "poems8").eval()
    assert max_difference(merged, fp32_peft) <= 1e-5
    assert max_difference(merged, fp32_peft.merge_and_unload()) <= 1e-5  # the fp32 merge
    assert "trained on a quantized base" in (tmp_path / "merged" / "README.md").read_text()


def test_a_weighted_merge_equals_the_mix(store, cli, tmp_path):
    result = cli("merge", "quickstart=0.7", "poems=0.3", "--out", tmp_path / "merged", "--verify")
    assert result.exit_code == 0, result.output
    figure = float(
        re.search(r"largest logit difference, saved model vs unmerged adapters: (\S+)", result.stdout).group(1)
    )
    assert figure <= 1e-5
    model, _ = toolkit.load(["quickstart", "poems"])
    toolkit.mix(model, {"quickstart": 0.7, "poems": 0.3})
    assert max_difference(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"), model) <= 1e-5
    card = (tmp_path / "merged" / "README.md").read_text()
    assert "| quickstart | 0.7 |" in card and "| poems | 0.3 |" in card


def test_dtype_is_the_base_checkpoints_own_unless_asked(store, tmp_path, tiny_model):
    result = toolkit.merge({"quickstart": 1.0}, tmp_path / "bf16", precision="bf16", verify=True)
    assert saved_dtype(tmp_path / "bf16") == torch.bfloat16
    assert 0 < result.max_difference < 0.1  # bfloat16 rounding, reported
    half_base = tmp_path / "half-base"
    AutoModelForCausalLM.from_pretrained(tiny_model).to(torch.float16).save_pretrained(half_base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model / name, half_base / name)
    # Another checkpoint (fp16 weights) than the one recorded: loads only with strict=False.
    toolkit.merge("quickstart", tmp_path / "fp16", base=str(half_base), strict=False)
    assert saved_dtype(tmp_path / "fp16") == torch.float16
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"


@pytest.mark.slow
def test_the_merged_folder_loads_and_generates_without_peft(store, tmp_path):
    toolkit.merge("quickstart", tmp_path / "merged")
    code = (
        "import sys; sys.modules['peft'] = None\n"  # `import peft` now fails, as if it were not installed
        "from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline\n"
        f"folder = {str(tmp_path / 'merged')!r}\n"
        "model = AutoModelForCausalLM.from_pretrained(folder)\n"
        "tokenizer = AutoTokenizer.from_pretrained(folder)\n"
        "ids = model.generate(**tokenizer('The cat', return_tensors='pt'), max_new_tokens=5, do_sample=False)\n"
        "print(repr(tokenizer.decode(ids[0, 2:])))\n"
        "text = pipeline('text-generation', model=folder)('The cat', max_new_tokens=5, "
        "do_sample=False)[0]['generated_text']\n"
        "print(repr(text))\n"
        "try:\n    import peft\nexcept ImportError:\n    print('no peft')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    model, tokenizer = toolkit.load("quickstart")
    expected = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=5, greedy=True)[0]
    assert done.stdout.splitlines() == [repr(expected), repr("The cat" + expected), "no peft"]


def test_an_existing_model_folder_is_replaced_only_when_asked(store, cli, tmp_path):
    out = tmp_path / "merged"
    assert cli("merge", "quickstart", "--out", out).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    refused = cli("merge", "poems", "--out", out)
    assert refused.exit_code == 2 and "exists and is not empty; pass --overwrite" in refused.stderr
    assert (out / "model.safetensors").read_bytes() == before
    assert cli("merge", "poems", "--out", out, "--overwrite").exit_code == 0
    assert (out / "model.safetensors").read_bytes() != before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    result = cli("merge", "poems", "--out", tmp_path / "notes", "--overwrite")
    assert result.exit_code == 2 and "does not look like a model folder" in result.stderr
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nope"], "no adapter named 'nope'"),
        (["quickstart=heavy"], "the weight of 'quickstart' ('heavy') is not a finite number"),
        (["quickstart=1", "poems=-1"], "the weights sum to zero"),
        (["quickstart", "quickstart=0.5"], "'quickstart' is given twice"),
        (["quickstart=0.5", "elsewhere=0.5"], "trained on different bases"),
    ],
)
def test_bad_input_gives_one_error_line_and_exit_code_2(store, cli, tmp_path, args, expected):
    result = cli("merge", *args, "--out", tmp_path / "merged")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result.stderr)) == 1 and expected in result.stderr, result.stderr
    assert not (tmp_path / "merged").exists()
