"""Generating with adapters: swap, mix, mixed batches, seeds, long prompts, the CLI and its interactive mode.

Real peft and transformers on the tiny GPT-2; the adapters come from `trained_adapters` (conftest):
'quickstart' (r=2, every layer), 'poems' (r=4, c_attn only), 'elsewhere' (another base).
"""

import json
import logging
import re

import pytest
import torch
from helpers import error_lines

import toolkit
from toolkit.modeling.switching import active_adapter

PROMPTS = ["The cat sees", "A dog finds the small house and", "My", "The old man paints a green door. The bird"]


@pytest.fixture
def loaded(store):
    """(model, tokenizer): the tiny base with 'quickstart' (active) and 'poems' loaded once."""
    return toolkit.load(["quickstart", "poems"])


@pytest.fixture
def warnings_seen(caplog, monkeypatch):
    """caplog for the toolkit's warnings; the CLI stops the 'toolkit' logger propagating, so undo that."""
    monkeypatch.setattr(logging.getLogger("toolkit"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="toolkit")
    return caplog


def logits(model, tokenizer, text: str = "The cat sees the moon. A dog") -> torch.Tensor:
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits


def greedy(model, tokenizer, prompt: str, tokens: int = 8) -> str:
    return toolkit.generate(model, tokenizer, prompt, max_new_tokens=tokens, greedy=True)[0]


# Swap -----------------------------------------------------------------------------------------------


def test_swapping_changes_the_output_and_swapping_back_restores_it_exactly(loaded, tiny_model):
    model, tokenizer = loaded
    first = logits(model, tokenizer)
    first_text = greedy(model, tokenizer, "The cat")
    toolkit.use(model, "poems")
    assert active_adapter(model) == "poems"
    assert (logits(model, tokenizer) - first).abs().max() > 1e-3
    toolkit.use(model, None)
    plain, _ = toolkit.load(base=str(tiny_model))
    assert torch.equal(logits(model, tokenizer), logits(plain, tokenizer))  # the base alone, exactly
    assert active_adapter(model) is None
    toolkit.use(model, "quickstart")
    assert torch.equal(logits(model, tokenizer), first)
    assert greedy(model, tokenizer, "The cat") == first_text


def test_an_adapter_loads_onto_the_base_in_memory_verified(store, tiny_model):
    """load_adapter adds one from disk without reloading the base; another base's adapter is refused."""
    model, tokenizer = toolkit.load(base=str(tiny_model))
    base_logits = logits(model, tokenizer)
    model = toolkit.load_adapter(model, tokenizer, "poems")
    assert torch.equal(logits(model, tokenizer), base_logits)  # loaded, not yet switched to
    toolkit.use(model, "poems")
    reference, _ = toolkit.load("poems")
    assert torch.equal(logits(model, tokenizer), logits(reference, tokenizer))
    with pytest.raises(toolkit.ToolkitError, match="other weights"):
        toolkit.load_adapter(model, tokenizer, "elsewhere")
    with pytest.raises(toolkit.ToolkitError, match="is not loaded"):
        toolkit.use(model, "quickstart")


# Mix ------------------------------------------------------------------------------------------------


def test_mixes_whose_weights_differ_in_the_seventh_digit_are_two_mixes(loaded):
    """Fault: weights equal to 6 significant digits (0.1234567 vs 0.1234568) once shared a name, and the
    second mix silently reused the first's weights."""
    model, _tokenizer = loaded
    first = toolkit.mix(model, {"quickstart": 0.1234567, "poems": 0.8})
    second = toolkit.mix(model, {"quickstart": 0.1234568, "poems": 0.8})
    assert first != second
    lora = next(iter(model.peft_config[first].target_modules))
    a = next(p for n, p in model.named_parameters() if f"lora_A.{first}" in n and lora in n)
    b = next(p for n, p in model.named_parameters() if f"lora_A.{second}" in n and lora in n)
    assert not torch.equal(a, b)  # the weights are folded into A: different weights, different factors
    assert toolkit.mix(model, {"quickstart": 0.1234567, "poems": 0.8}) == first  # the same weights: built once


def test_the_mix_is_the_weighted_sum_of_the_updates_for_different_ranks(loaded, tiny_model, store):
    """w1 * s1 * B1 A1 + w2 * s2 * B2 A2 (s = alpha / r), computed here from the saved tensors, equals the
    mix's update layer by layer, and a base with those updates added by hand gives the mix's logits."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model, tokenizer = loaded
    weights = {"quickstart": 0.7, "poems": -0.2}
    name = toolkit.mix(model, weights)
    assert active_adapter(model) == name and model.peft_config[name].r == 2 + 4

    by_hand = {}  # module name -> summed update in the Conv1D layout (in, out)
    for adapter, weight in weights.items():
        config = json.loads((store / adapter / "adapter_config.json").read_text())
        scale = config["lora_alpha"] / config["r"]
        tensors = load_file(store / adapter / "adapter_model.safetensors")
        for key, a in tensors.items():
            if key.endswith("lora_A.weight"):
                module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
                b = tensors[key.replace("lora_A", "lora_B")]
                by_hand[module] = by_hand.get(module, 0) + weight * scale * (b @ a).T
    assert any("c_fc" in m for m in by_hand) and any("c_attn" in m for m in by_hand)  # one layer kind has both

    for module, delta in by_hand.items():
        layer = model.get_submodule(f"base_model.model.{module}")
        assert torch.allclose(layer.get_delta_weight(name), delta, atol=1e-7), module

    hand_built = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        for module, delta in by_hand.items():
            hand_built.get_submodule(module).weight += delta
    assert (logits(model, tokenizer) - logits(hand_built, tokenizer)).abs().max() <= 1e-5


def test_one_adapter_mixed_scales_its_update(loaded):
    model, _tokenizer = loaded
    layer = model.get_submodule("base_model.model.transformer.h.0.attn.c_attn")
    name = toolkit.mix(model, "poems=0.5")
    assert torch.allclose(layer.get_delta_weight(name), 0.5 * layer.get_delta_weight("poems"), atol=1e-7)
    assert toolkit.mix(model, {"poems": 0.5}) == name  # the same weights: the same adapter, built once


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("quickstart=abc", "the weight of 'quickstart' ('abc') is not a finite number"),
        ("quickstart=nan", "is not a finite number"),
        ("quickstart=1,poems=-1", "the weights sum to zero"),
        ("quickstart=0.5,quickstart=0.5", "'quickstart' is given twice"),
        ("quickstart=0.5,,poems=0.5", "an item has no adapter name"),
        ("nope=1", "no adapter named 'nope'"),
    ],
)
def test_bad_mix_weights_are_refused_naming_the_fix(loaded, spec, expected):
    model, _ = loaded
    with pytest.raises(toolkit.ToolkitError) as err:
        toolkit.mix(model, spec)
    assert len(err.value.problems) == 1 and expected in err.value.problems[0]


# Mixed batches, seeds, long prompts -----------------------------------------------------------------


def test_mixed_batch_rows_equal_single_adapter_runs(loaded):
    model, tokenizer = loaded
    mixed = toolkit.mix(model, {"quickstart": 0.5, "poems": 0.5})
    toolkit.use(model, "quickstart")
    requests = list(zip(PROMPTS, ["quickstart", None, "poems", mixed]))
    batch = toolkit.generate_batch(model, tokenizer, requests, max_new_tokens=8, greedy=True)
    assert active_adapter(model) == "quickstart"  # a batch switches nothing
    singles = []
    for prompt, adapter in requests:
        toolkit.use(model, adapter)
        singles.append(greedy(model, tokenizer, prompt))
    assert batch == singles
    assert len(set(singles)) > 1


def test_a_mixed_batch_runs_while_the_base_alone_is_active(loaded):
    model, tokenizer = loaded
    toolkit.use(model, None)
    batch = toolkit.generate_batch(
        model, tokenizer, [("The cat", "poems"), ("The cat", None)], max_new_tokens=8, greedy=True
    )
    assert active_adapter(model) is None
    toolkit.use(model, "poems")
    assert batch[0] == greedy(model, tokenizer, "The cat")
    toolkit.use(model, None)
    assert batch[1] == greedy(model, tokenizer, "The cat")


def test_a_fixed_seed_reproduces_samples(loaded):
    model, tokenizer = loaded
    first = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=20, num_sequences=2, seed=3)
    again = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=20, num_sequences=2, seed=3)
    other = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=20, num_sequences=2, seed=4)
    assert first == again and first != other and len(first) == 2
    assert toolkit.generate_batch(
        model, tokenizer, [("The cat", "poems")], max_new_tokens=20, seed=3
    ) == toolkit.generate_batch(model, tokenizer, [("The cat", "poems")], max_new_tokens=20, seed=3)


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens(loaded, warnings_seen):
    model, tokenizer = loaded
    long_prompt = " ".join(PROMPTS * 6)
    ids = tokenizer(long_prompt)["input_ids"]
    assert len(ids) > 64  # the tiny model's context
    text = greedy(model, tokenizer, long_prompt, tokens=8)
    assert text == greedy(model, tokenizer, tokenizer.decode(ids[-(64 - 8) :]), tokens=8)
    assert any(f"keeping its last {64 - 8}" in r.getMessage() for r in warnings_seen.records)
    with pytest.raises(toolkit.ToolkitError, match="use at most 63"):
        greedy(model, tokenizer, "The", tokens=64)


def test_streaming_writes_the_text_as_it_comes(loaded):
    model, tokenizer = loaded
    pieces = []
    text = toolkit.generate(model, tokenizer, "The cat", max_new_tokens=12, greedy=True, stream=pieces.append)[0]
    assert len(pieces) > 1 and "".join(pieces) == text + "\n"


# The command line -----------------------------------------------------------------------------------


def test_generate_prints_the_text_alone_from_a_prompt_a_file_or_stdin(loaded, cli, tmp_path):
    model, tokenizer = loaded
    expected = greedy(model, tokenizer, "The cat sees", tokens=10)
    args = ["generate", "--adapter", "quickstart", "--max-new-tokens", "10", "--greedy"]
    result = cli(*args, "--prompt", "The cat sees")
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    assert "tokens/s" in result.stderr and "tokens/s" not in result.stdout
    (tmp_path / "prompt.txt").write_text("The cat sees\n")
    assert cli(*args, "--prompt-file", tmp_path / "prompt.txt").stdout == expected + "\n"
    from click.testing import CliRunner

    from toolkit.cli import main

    piped = CliRunner().invoke(main, args, input="The cat sees\n", catch_exceptions=False)
    assert piped.stdout == expected + "\n"


def test_generate_with_a_seed_is_reproducible_and_samples_by_default(store, cli):
    args = ["generate", "--adapter", "poems", "--prompt", "The", "--max-new-tokens", "20", "--json"]
    first = json.loads(cli(*args, "--seed", "7").stdout)
    assert json.loads(cli(*args, "--seed", "7").stdout) == first
    assert json.loads(cli(*args, "--seed", "8").stdout)["texts"] != first["texts"]
    assert first["adapter"] == "poems"


def test_compare_generates_with_the_base_and_each_adapter(loaded, cli):
    model, tokenizer = loaded
    expected = {}
    for name in (None, "quickstart", "poems"):
        toolkit.use(model, name)
        expected[name or "base"] = greedy(model, tokenizer, "The cat")
    result = cli(
        "generate",
        "--adapter",
        "quickstart",
        "--adapter",
        "poems",
        "--compare",
        "--prompt",
        "The cat",
        "--max-new-tokens",
        "8",
        "--greedy",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "\n\n".join(f"== {name} ==\n{text}" for name, text in expected.items()) + "\n"


def test_mix_from_the_command_line_matches_python(loaded, cli):
    model, tokenizer = loaded
    toolkit.mix(model, {"quickstart": 0.7, "poems": 0.3})
    expected = greedy(model, tokenizer, "The cat")
    result = cli(
        "generate",
        "--mix",
        "quickstart=0.7,poems=0.3",
        "--prompt",
        "The cat",
        "--max-new-tokens",
        "8",
        "--greedy",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "adapter": "mix quickstart=0.7,poems=0.3",
        "prompt": "The cat",
        "texts": [expected],
    }


def test_batch_file_generates_each_request_with_its_adapter(loaded, cli, tmp_path):
    model, tokenizer = loaded
    requests = [("The cat sees", "quickstart"), ("A dog", None), ("My", "poems")]
    expected = toolkit.generate_batch(model, tokenizer, requests, max_new_tokens=8, greedy=True)
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p, "adapter": a}) for p, a in requests) + "\n")
    result = cli("generate", "--batch", path, "--max-new-tokens", "8", "--greedy")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["prompt"], r["adapter"], r["text"]) for r in rows] == [
        (p, a, t) for (p, a), t in zip(requests, expected)
    ]
    assert [r["request"] for r in rows] == [1, 2, 3]


def test_interactive_mode_switches_without_reloading(loaded, cli):
    model, tokenizer = loaded
    expected = [greedy(model, tokenizer, "The cat")]
    toolkit.use(model, "poems")
    expected.append(greedy(model, tokenizer, "The cat"))
    toolkit.use(model, None)
    expected.append(greedy(model, tokenizer, "The cat"))
    toolkit.mix(model, {"quickstart": 0.5, "poems": 0.5})
    expected.append(greedy(model, tokenizer, "The cat"))
    toolkit.use(model, "quickstart")
    expected.append(greedy(model, tokenizer, "The cat"))

    lines = [
        "The cat",
        "/adapter poems",
        "The cat",
        "/base",
        "The cat",
        "/mix quickstart=0.5,poems=0.5",
        "The cat",
        "/nonsense",
        "/adapter nope",
        "/adapter elsewhere",
        "/adapter quickstart",
        "The cat",
        "/quit",
        "The dog",
    ]
    from click.testing import CliRunner

    from toolkit.cli import main

    result = CliRunner().invoke(
        main,
        ["generate", "--adapter", "quickstart", "--interactive", "--max-new-tokens", "8", "--greedy"],
        input="\n".join(lines) + "\n",
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == expected  # nothing after /quit
    assert "adapter poems" in result.stderr and "mix quickstart=0.5,poems=0.5" in result.stderr
    assert "error: unknown command /nonsense" in result.stderr
    assert "error: no adapter named 'nope'" in result.stderr
    assert "other weights" in result.stderr  # 'elsewhere' was trained on another base


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--adapter", "nope", "--prompt", "The"], "no adapter named 'nope'"),
        (["--mix", "quickstart=0.7,poems=x", "--prompt", "The"], "the weight of 'poems' ('x') is not a finite number"),
        (["--mix", "quickstart=0.5,poems=-0.5", "--prompt", "The"], "the weights sum to zero"),
        (["--mix", "quickstart=0.5,elsewhere=0.5", "--prompt", "The"], "trained on different bases"),
        (["--adapter", "quickstart", "--compare", "--batch", "x.jsonl"], "--batch and --compare: choose one"),
        (["--compare", "--prompt", "The"], "--compare: name the adapters"),
        (["--adapter", "quickstart", "--prompt", "The", "--max-new-tokens", "64"], "use at most 63"),
        (["--adapter", "quickstart", "--prompt", "The", "--top-p", "1.5"], "--top-p: must be in (0, 1]"),
        (["--adapter", "quickstart", "--batch", "bad.jsonl"], "line 2: not JSON"),
    ],
)
def test_bad_input_gives_one_error_line_and_exit_code_2(store, cli, tmp_path, args, expected):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "The", "adapter": "poems"}\n{"prompt": \n')
    result = cli("generate", *args)
    assert result.exit_code == 2, result.output
    assert error_lines(result.stderr) == [error_lines(result.stderr)[0]] and expected in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_long_prompt_on_the_command_line_is_cut_with_a_warning(store, cli):
    result = cli(
        "generate", "--adapter", "quickstart", "--prompt", " ".join(PROMPTS * 6), "--max-new-tokens", "8", "--greedy"
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"the prompt has \d+ tokens.*keeping its last 56", result.stderr)
