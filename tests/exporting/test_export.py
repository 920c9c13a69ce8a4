"""`gpt2-adapt export`: the files are checked by the runtimes themselves, not by reading them back.

llama.cpp (llama-cpp-python, in a child process: a LoRA it cannot load crashes the wrapper) runs the GGUF
files and ONNX Runtime the ONNX model, on the tiny GPT-2 with trained adapters (conftest's `store`) and a
random one (a large update). Their logits are compared with the toolkit's own (peft on the fp32 base) as
max |difference| / max |logit|, within export's stated tolerance per type.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_lines
from serving.servers import add_adapter

import toolkit
from toolkit.exporting import runtimes
from toolkit.exporting.export import TOLERANCES

pytestmark = pytest.mark.skipif(
    not (runtimes.installed(runtimes.LLAMA) and runtimes.installed(runtimes.ONNX)),
    reason="llama-cpp-python and onnxruntime are not installed (the test extra has them)",
)

GGUF_FILES = {"adapter.gguf", "base.gguf", "merged.gguf", "export.json"}
PROMPTS = ["The cat sees", "A dog likes the", "my sister paints a red"]


def rows(vocab: int = 300, n: int = 2, length: int = 48) -> list[list[int]]:
    generator = torch.Generator().manual_seed(7)
    return torch.randint(vocab, (n, length), generator=generator).tolist()


def toolkit_logits(model) -> np.ndarray:
    with torch.inference_mode():
        return model(input_ids=torch.tensor(rows())).logits.float().numpy()


def relative(actual, expected) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture
def random_store(store, tiny_model) -> Path:
    """The trained store, plus `random`: an adapter with random A and B (its effect is large)."""
    add_adapter(store, tiny_model, "random", seed=3)
    return store


@pytest.mark.parametrize("tensor_type", ["f32", "q8_0"])
def test_llama_cpp_runs_the_base_the_lora_and_the_merged_model_as_the_toolkit_does(random_store, tmp_path, tensor_type):
    out = tmp_path / "export"
    result = toolkit.export("random", out, tensor_type=tensor_type, merged=True)
    assert {p.name for p in out.iterdir()} == GGUF_FILES and result.files == [
        "adapter.gguf",
        "base.gguf",
        "merged.gguf",
    ]
    with_adapter, _ = toolkit.load("random")
    expected = toolkit_logits(with_adapter)
    with with_adapter.disable_adapter():
        expected_base = toolkit_logits(with_adapter)

    base = runtimes.llama_logits(out / "base.gguf", rows())
    lora = runtimes.llama_logits(out / "base.gguf", rows(), lora=out / "adapter.gguf")
    merged = runtimes.llama_logits(out / "merged.gguf", rows())
    tolerance = TOLERANCES[tensor_type]
    assert relative(base, expected_base) <= tolerance
    assert relative(lora, expected) <= tolerance
    assert relative(merged, expected) <= tolerance
    # llama.cpp applied the adapter: it moves llama.cpp's logits as it moves the toolkit's, far beyond the tolerance.
    assert relative(lora, base) > max(0.5 * relative(expected, expected_base), 5 * tolerance)


def test_a_trained_adapter_and_a_mix_exported_as_one_lora_file(random_store, tmp_path):
    result = toolkit.export({"quickstart": 0.7, "random": 0.3}, tmp_path / "mix")
    assert result.weights == {"quickstart": 0.7, "random": 0.3}
    model, _ = toolkit.load(["quickstart", "random"])
    toolkit.mix(model, {"quickstart": 0.7, "random": 0.3})
    lora = runtimes.llama_logits(tmp_path / "mix" / "base.gguf", rows(), lora=tmp_path / "mix" / "adapter.gguf")
    assert relative(lora, toolkit_logits(model)) <= TOLERANCES["f32"]

    toolkit.export("quickstart", tmp_path / "trained", base_file=False)  # the base of the mix serves it too
    alone, _ = toolkit.load("quickstart")
    expected = toolkit_logits(alone)
    trained = runtimes.llama_logits(tmp_path / "mix" / "base.gguf", rows(), lora=tmp_path / "trained" / "adapter.gguf")
    assert relative(trained, expected) <= TOLERANCES["f32"]
    with alone.disable_adapter():
        assert relative(trained, toolkit_logits(alone)) > 10 * TOLERANCES["f32"]  # 5 steps moved it measurably


def test_per_module_alphas_are_folded_into_the_lora_file(store, tmp_path, tiny_model):
    """No single alpha / rank gives peft's scaling for both modules: each B carries its own, the file's alpha is 0."""
    import gguf

    import_peft_adapter(
        store,
        tiny_model,
        "patterned",
        r=4,
        lora_alpha=8,
        alpha_pattern={"c_fc": 2},
        target_modules=["c_attn", "c_fc"],
        init_lora_weights=False,
    )
    toolkit.export("patterned", tmp_path / "export")
    alpha = gguf.GGUFReader(tmp_path / "export" / "adapter.gguf").fields["adapter.lora.alpha"].parts[-1][0]
    assert alpha == 0
    model, _ = toolkit.load("patterned")
    folder = tmp_path / "export"
    lora = runtimes.llama_logits(folder / "base.gguf", rows(), lora=folder / "adapter.gguf")
    assert relative(lora, toolkit_logits(model)) <= TOLERANCES["f32"]


def test_greedy_text_from_llama_cpp_equals_generate_greedy(random_store, tmp_path, cli):
    toolkit.export("random", tmp_path / "export", merged=True)
    expected = []
    for prompt in PROMPTS:
        result = cli(
            "generate", "--adapter", "random", "--prompt", prompt, "--greedy", "--max-new-tokens", 12, "--json"
        )
        assert result.exit_code == 0, result.output
        expected.append(json.loads(result.stdout)["texts"][0])
    folder = tmp_path / "export"
    assert runtimes.llama_greedy(folder / "base.gguf", PROMPTS, 12, lora=folder / "adapter.gguf") == expected
    assert runtimes.llama_greedy(folder / "merged.gguf", PROMPTS, 12) == expected
    assert runtimes.llama_greedy(folder / "base.gguf", PROMPTS, 12) != expected  # the adapter makes the text


def test_onnx_runtime_runs_the_merged_model_with_and_without_past_key_values(random_store, tmp_path):
    result = toolkit.export("random", tmp_path / "onnx", format="onnx")
    assert result.files == ["model.onnx"] and (tmp_path / "onnx" / "tokenizer.json").is_file()
    model, _ = toolkit.load("random")
    expected = toolkit_logits(model)
    assert relative(runtimes.onnx_logits(tmp_path / "onnx", rows()), expected) <= TOLERANCES["onnx"]
    assert relative(runtimes.onnx_logits(tmp_path / "onnx", rows(), past_from=20), expected) <= TOLERANCES["onnx"]


def test_an_int8_trained_adapter_is_exported_against_the_full_precision_base(store, cli, tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    result = cli("export", "poems8", "--out", tmp_path / "export", "--verify")
    assert result.exit_code == 0, result.output
    assert "poems8 was trained on a quantized base: exported against the base at full precision" in result.stdout
    assert result.stdout.count(": ok") == 2 and "adapter.gguf on base.gguf in llama.cpp" in result.stdout
    fp32_peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), store / "poems8").eval()
    lora = runtimes.llama_logits(tmp_path / "export" / "base.gguf", rows(), lora=tmp_path / "export" / "adapter.gguf")
    assert relative(lora, toolkit_logits(fp32_peft)) <= TOLERANCES["f32"]


def import_peft_adapter(store: Path, base: Path, name: str, **config) -> None:
    """An adapter made by peft with `config` (LoraConfig's fields), imported into the store."""
    import tempfile

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from toolkit.store.importing import import_adapter
    from toolkit.store.store import AdapterStore

    torch.manual_seed(5)
    config = LoraConfig(fan_in_fan_out=True, task_type="CAUSAL_LM", **config)
    with tempfile.TemporaryDirectory() as scratch:
        get_peft_model(AutoModelForCausalLM.from_pretrained(base), config).save_pretrained(scratch)
        import_adapter(Path(scratch), AdapterStore(store), name=name, base=str(base))


def dora_adapter(store: Path, base: Path) -> None:
    import_peft_adapter(store, base, "dora", r=2, lora_alpha=4, target_modules=["c_attn"], use_dora=True)


def test_bad_requests_are_refused_with_one_line_and_nothing_written(random_store, cli, tmp_path, tiny_model):
    dora_adapter(random_store, tiny_model)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    cases = {
        ("dora",): "uses DoRA, and llama.cpp's LoRA has no magnitude vector",
        ("random", "--format", "onnx", "--type", "q8_0"): "the ONNX model is written in float32 only",
        ("random", "--no-adapter", "--no-base"): "nothing to export",
        ("nosuch",): "nosuch",
        ("random", "--mix", "random=1"): "not both",
    }
    for args, message in cases.items():
        result = cli("export", *args, "--out", tmp_path / "out")
        assert result.exit_code == 2, (args, result.output)
        assert len(error_lines(result.output)) == 1 and message in result.output, (args, result.output)
    taken = cli("export", "random", "--out", tmp_path / "taken", "--overwrite")
    assert taken.exit_code == 2 and "does not look like an export folder (no export.json)" in taken.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("store", "cache")) == [
        "taken"
    ]  # no out, no temp folder
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["notes.txt"]


def test_a_dora_adapter_exports_merged(random_store, tmp_path, tiny_model, cli):
    dora_adapter(random_store, tiny_model)
    result = cli("export", "dora", "--out", tmp_path / "export", "--merged", "--no-adapter", "--verify")
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "export")) == ["base.gguf", "export.json", "merged.gguf"]
    assert result.stdout.count(": ok") == 2
