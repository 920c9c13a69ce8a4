"""Training on prompt/completion examples: several examples packed in a block compute exactly what each
computes alone (logits, training loss, evaluation), and the whole path through the CLI (train, eval with the
adapter's format, generate with its template) on the tiny GPT-2."""

import json
import random
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments, default_data_collator

from toolkit.config.recipe import DataSpec
from toolkit.data.documents import check_rows
from toolkit.data.examples import encode_examples
from toolkit.data.packing import ExampleBlocks, example_arrays, example_stream, fit_blocks
from toolkit.evaluation.scoring import score
from toolkit.records import Protocol
from toolkit.training.checkpoints import CheckpointKeeper
from toolkit.training.trainer import AdapterTrainer

SUBJECTS = ["the cat", "a dog", "my sister", "the bird", "the old man", "a child"]
OBJECTS = ["the river", "a red ball", "the moon", "an apple", "a green door"]


def qa_rows(n: int, seed: int, most: int = 2) -> list[dict]:
    """Questions of varied length (up to `most` sentences before the one that matters), each with a short
    answer the question holds."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        subject, thing = rng.choice(SUBJECTS), rng.choice(OBJECTS)
        noise = " ".join(f"{rng.choice(SUBJECTS)} sees {rng.choice(OBJECTS)}." for _ in range(rng.randint(0, most)))
        rows.append(
            {
                "prompt": f"{noise} {subject} finds {thing}. What does {subject} find?".strip(),
                "completion": f" {thing}.",
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def lora_model(tiny_model):
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32, attn_implementation="eager")
    base.loss_type = "ForCausalLM"
    config = LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(base, config).eval()


@pytest.fixture
def packed(tiny_model):
    """Examples of the tiny grammar, of several lengths, with a template, packed best-fit into blocks of 64."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    spec = DataSpec(
        train_files=["qa.jsonl"],
        format="prompt_completion",
        block_size=64,
        template="Q:{prompt}",
        truncate="prompt_left",
    )
    rows = check_rows(datasets.Dataset.from_list(qa_rows(12, seed=3, most=1)), "rows", spec)
    examples = encode_examples(rows, spec, tokenizer, "rows")
    packing = fit_blocks([len(e) for e in examples], 64)
    assert any(len(block) >= 2 for block in packing.blocks)  # blocks that really hold several examples
    return examples, packing


def test_an_examples_logits_in_a_packed_block_equal_its_logits_alone(lora_model, packed):
    examples, packing = packed
    arrays = example_arrays(examples, packing)
    blocks = ExampleBlocks(arrays["ids"], arrays["scored"], arrays["positions"])
    worst = 0.0
    with torch.no_grad():
        for b, members in enumerate(packing.blocks):
            item = blocks[b]
            # As training calls it (AdapterTrainer.compute_loss): positions given, no cache.
            logits = lora_model(
                input_ids=item["input_ids"][None], position_ids=item["position_ids"][None], use_cache=False
            ).logits[0]
            at = 0
            for i in members:
                alone = lora_model(input_ids=torch.from_numpy(examples[i].ids)[None]).logits[0]
                worst = max(worst, (logits[at : at + len(examples[i])] - alone).abs().max().item())
                at += len(examples[i])
    assert worst <= 1e-5


def test_the_training_loss_of_a_packed_block_is_the_sum_over_its_examples_alone(lora_model, packed, tmp_path):
    examples, packing = packed
    arrays = example_arrays(examples, packing)
    blocks = ExampleBlocks(arrays["ids"], arrays["scored"], arrays["positions"])
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = AdapterTrainer(
        keeper=CheckpointKeeper(1),
        protocol=Protocol(64, 64, examples=True),
        eval_dataset=None,
        model=lora_model,
        args=args,
        data_collator=default_data_collator,
    )
    b = max(range(len(packing.blocks)), key=lambda i: len(packing.blocks[i]))
    batch = default_data_collator([blocks[b]])
    with torch.no_grad():  # num_items_in_batch=1: the summed NLL of the block's learnt tokens
        packed_loss = trainer.compute_loss(lora_model, dict(batch), num_items_in_batch=1).item()
        alone = 0.0
        for i in packing.blocks[b]:
            ids = torch.from_numpy(examples[i].ids)
            logits = lora_model(input_ids=ids[None]).logits[0].double()
            nll = torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
            alone += nll[torch.from_numpy(examples[i].scored()[1:])].sum().item()  # the completion and its EOS
    assert packed_loss == pytest.approx(alone, rel=1e-5)


def test_the_evaluation_of_packed_examples_is_their_completions_scored_alone(lora_model, packed):
    examples, _ = packed
    scored = score(lora_model, example_stream(examples), Protocol(64, 64, examples=True)).score
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for example in examples:
            ids = torch.from_numpy(example.ids)
            logits = lora_model(input_ids=ids[None]).logits[0].double()
            mask = torch.from_numpy(example.scored()[1:])
            nll += torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")[mask].sum().item()
            tokens += int(mask.sum())
    assert scored.tokens == tokens
    assert scored.mean_nll * scored.tokens == pytest.approx(nll, rel=1e-6)
    assert scored.bytes == sum(int(e.nbytes[e.scored()].sum()) for e in examples)


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def qa_recipe(write_recipe, tmp_path):
    train = write_jsonl(tmp_path / "qa-train.jsonl", qa_rows(300, seed=1))
    valid = write_jsonl(tmp_path / "qa-valid.jsonl", qa_rows(40, seed=2))

    def write(name="qa.toml", block_size=64, **training):
        return write_recipe(
            name,
            data={
                "train_files": [train],
                "eval_files": [valid],
                "block_size": block_size,
                "format": "prompt_completion",
                "template": "Q: {prompt}\nA:",
                "truncate": "prompt_left",
            },
            training={"max_steps": 40, "precision": "fp32", **training},
            output={"name": "qa"},
        )

    return write


def test_train_eval_and_generate_on_examples_through_the_cli(qa_recipe, cli, tmp_path):
    result = cli("train", qa_recipe(), "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["protocol"]["examples"] and "completion tokens" in metrics["protocol"]["description"]
    assert metrics["adapted"]["perplexity"] < metrics["base"]["perplexity"]
    data = metrics["data"]["train"]
    assert data["documents"] == 300 and data["blocks"] < 300 and 0 <= data["padding"] < 0.2
    assert metrics["adapted"]["tokens"] == metrics["data"]["eval"]["tokens"]  # the completions' tokens, no more

    # eval reads the adapter's format: the same examples, the same completion tokens, training's figures.
    evaluated = cli("eval", "--adapter", "qa", "--files", tmp_path / "qa-valid.jsonl", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    base, adapted = json.loads(evaluated.stdout)
    assert adapted["protocol"] == metrics["protocol"] and adapted["protocol"]["examples"]
    assert adapted["tokens"] == metrics["adapted"]["tokens"] and adapted["documents"] == 40
    assert adapted["perplexity"] == pytest.approx(metrics["adapted"]["perplexity"], rel=1e-4)
    assert base["perplexity"] == pytest.approx(metrics["base"]["perplexity"], rel=1e-4)

    # generate puts the prompt in the template after EOS, as training did, and stops at EOS.
    import toolkit
    from toolkit.generation.generate import prompt_tokens

    model, tokenizer = toolkit.load("qa")
    expected_ids = prompt_tokens(tokenizer, "What does the cat find?", "Q: {prompt}\nA:")
    assert expected_ids[0] == tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(
            input_ids=torch.tensor([expected_ids]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        )
    new = output[0, len(expected_ids) :].tolist()
    until_eos = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
    printed = cli(
        "generate", "--adapter", "qa", "--prompt", "What does the cat find?", "--greedy", "--max-new-tokens", "12"
    )
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.rstrip("\n") == tokenizer.decode(until_eos)
    assert toolkit.generate(model, tokenizer, "What does the cat find?", max_new_tokens=12, greedy=True) == [
        tokenizer.decode(until_eos)
    ]


def test_examples_are_scored_at_their_adapters_block_size_with_their_prompts_cut_as_in_training(
    qa_recipe, cli, tmp_path
):
    """Trained at block 32 with prompts cut from the left, an adapter's examples are scored by eval --files at
    32 (not at the model's 64 positions): the same prompts cut, training's figures."""
    result = cli("train", qa_recipe(block_size=32), "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["data"]["train"]["truncated"] > 0  # prompts longer than the block are cut
    scored = {}
    for context in ((), ("--context", "64")):
        evaluated = cli("eval", "--adapter", "qa", "--files", tmp_path / "qa-valid.jsonl", "--json", *context)
        assert evaluated.exit_code == 0, evaluated.output
        scored[context] = json.loads(evaluated.stdout)
    base, adapted = scored[()]
    assert adapted["protocol"]["context"] == 32
    assert adapted["perplexity"] == pytest.approx(metrics["adapted"]["perplexity"], rel=1e-4)
    assert base["perplexity"] == pytest.approx(metrics["base"]["perplexity"], rel=1e-4)
    wider = scored[("--context", "64")][1]  # the whole prompts: not what training measured
    assert wider["perplexity"] != pytest.approx(metrics["adapted"]["perplexity"], rel=1e-4)


def test_a_loaded_examples_adapter_is_scored_on_examples_as_the_cli_scores_it_or_on_plain_text_when_asked(
    qa_recipe, cli, tmp_path
):
    import toolkit
    from toolkit.errors import ToolkitError

    assert cli("train", qa_recipe()).exit_code == 0
    valid = str(tmp_path / "qa-valid.jsonl")
    by_cli = json.loads(cli("eval", "--adapter", "qa", "--files", valid, "--json").stdout)[1]
    model, tokenizer = toolkit.load("qa")
    [in_memory] = toolkit.evaluate(model, tokenizer=tokenizer, files=[valid])
    assert in_memory.protocol.examples and in_memory.score.tokens == by_cli["tokens"]
    assert in_memory.score.perplexity == pytest.approx(by_cli["perplexity"], rel=1e-6)

    # On plain text, asked for explicitly: a column's every token, in the Python API and the CLI alike.
    [plain] = toolkit.evaluate(model, tokenizer=tokenizer, files=[valid], text_column="prompt", as_text=True)
    shown = cli("eval", "--adapter", "qa", "--files", valid, "--text-column", "prompt", "--as-text", "--json")
    assert shown.exit_code == 0, shown.output
    cli_plain = json.loads(shown.stdout)[1]
    assert not plain.protocol.examples and not cli_plain["protocol"]["examples"]
    assert plain.score.tokens == cli_plain["tokens"] != by_cli["tokens"]
    assert plain.score.perplexity == pytest.approx(cli_plain["perplexity"], rel=1e-6)

    # A text column without --as-text would be ignored: refused, in both.
    refused = cli("eval", "--adapter", "qa", "--files", valid, "--text-column", "completion")
    assert refused.exit_code == 2 and "--text-column" in refused.output and "--as-text" in refused.output
    with pytest.raises(ToolkitError, match="as_text=True"):
        toolkit.evaluate(model, tokenizer=tokenizer, files=[valid], text_column="completion")
