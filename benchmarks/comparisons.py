"""`gpt2-adapt bench`'s rows beside the two ways people train GPT-2 without the toolkit, each in a fresh
process as the bench runs its own (`run` passes them to toolkit.bench.runner):
- seed: the 2022 write-up's pipeline. Each line is tokenized and padded to the longest line of its
  `datasets.map` batch, batches are padded again by DataCollatorForLanguageModeling, and all of GPT-2 is
  fine-tuned in fp32. Only its non-padding tokens count as useful.
- peft, peft-bf16: plain peft + Trainer written the obvious way: run_clm's packing (concatenate, cut into
  blocks), the same LoRA as the toolkit's default (r=16 on c_attn), in fp32 and, where the machine has
  native bf16, with bf16 autocast (`bf16=True`): what a user who knows the libraries turns on with one flag.
  The last of them, the one the targets compare against, runs again with one core busy after each quiet run,
  as the bench's default recipe does.

Both run as a script that never ran `gpt2-adapt` would: with OpenMP's default wait policy (threads spin at
barriers), which the command line changes for the toolkit's own processes.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.bench import runner as bench
from toolkit.bench.cases import Setup, base_parameters, timed_training
from toolkit.bench.report import BUSY
from toolkit.bench.report import LABELS as BENCH_LABELS
from toolkit.bench.report import table as bench_table

from . import targets

# The plain peft + Trainer script at each precision a user sets with one flag: fp32 (the examples' default)
# and bf16 autocast (`bf16=True`) where the machine multiplies bf16 natively, as the default recipe does.
PLAIN_PEFT = {"peft": "fp32", "peft-bf16": "bf16"}
OTHER_PIPELINES = {
    "peft": "plain peft + Trainer: run_clm packing, fp32",
    "peft-bf16": "plain peft + Trainer: run_clm packing, bf16",
    "seed": "seed pipeline: padded lines, full fine-tune, fp32",
}
LABELS = BENCH_LABELS | OTHER_PIPELINES | {n + BUSY: f"{label}, one core busy" for n, label in OTHER_PIPELINES.items()}


def run(setup: Setup, report=print) -> dict:
    """toolkit.bench.runner's measurements, with the other pipelines' training rows where training is measured."""
    return bench.measure(setup, report, training_cases(setup.device) if "training" in setup.parts else ())


def table(results: dict) -> str:
    """The bench's table with the other pipelines' rows, then the targets and whether this machine met them."""
    out = [bench_table(results, LABELS)]
    seed = results.get("training", {}).get("seed")
    if seed:
        out.append(f"  (seed pipeline: {100 * seed['padding_share']:.0f}% of its positions are padding)")
    return "\n".join(out + targets.lines(results))


def training_cases(device: str) -> list[bench.TrainingCase]:
    plain = plain_peft_cases(device)
    return [
        *(bench.TrainingCase(name, plain_peft_case, busy=name == plain[-1], openmp_defaults=True) for name in plain),
        bench.TrainingCase("seed", seed_case, openmp_defaults=True),
    ]


def plain_peft_cases(device: str) -> list[str]:
    """fp32, and bf16 where the device computes it natively (elsewhere bf16 is emulated: nobody would pick it)."""
    import torch

    from toolkit.hardware import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16() if device == "cpu" else torch.cuda.is_bf16_supported()
    return ["peft", "peft-bf16"] if native_bf16 else ["peft"]


def plain_peft_case(setup: Setup, name: str) -> dict:
    """LoRA the way the peft and transformers examples put it together: run_clm packing, the Trainer, at the
    precision of `name` (fp32, or bf16 autocast through TrainingArguments(bf16=True)), attention as the
    libraries choose it by default."""
    precision = PLAIN_PEFT[name.removesuffix(BUSY)]
    return timed_training(setup, lambda timer: _plain_peft(setup, timer, precision))


def seed_case(setup: Setup, name: str) -> dict:
    """The 2022 write-up's pipeline, mended only where today's libraries refuse it: pad = EOS (GPT-2 has
    no pad token) and labels from the collator (the seed passed none, so nothing trained)."""
    return timed_training(setup, lambda timer: _seed_pipeline(setup, timer))


def _plain_peft(setup: Setup, timer, precision: str) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, default_data_collator

    from toolkit.config.recipe import TARGET_PRESETS, LoraSpec

    base = Path(setup.work) / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    lines = Dataset.from_dict({"text": (Path(setup.work) / "train.txt").read_text(encoding="utf-8").splitlines()})
    tokens = lines.map(lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])

    def group(batch):  # run_clm's group_texts: concatenate everything, cut into blocks, drop the remainder
        ids = [t for row in batch["input_ids"] for t in row]
        cut = len(ids) // setup.block_size * setup.block_size
        blocks = [ids[i : i + setup.block_size] for i in range(0, cut, setup.block_size)]
        return {"input_ids": blocks, "attention_mask": [[1] * setup.block_size for _ in blocks], "labels": blocks}

    blocks = tokens.map(group, batched=True, remove_columns=tokens.column_names)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = LoraSpec()  # the same adapter as the toolkit's default recipe
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=TARGET_PRESETS[lora.targets],
        fan_in_fan_out=True,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    args = _arguments(setup, f"peft-{precision}", bf16=precision == "bf16")
    Trainer(
        model=model, args=args, train_dataset=blocks, data_collator=default_data_collator, callbacks=[timer]
    ).train()
    return {"parameters": base_parameters(base), "precision": precision}


def _seed_pipeline(setup: Setup, timer) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer

    base = Path(setup.work) / "base"
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token = tokenizer.eos_token
    lines = Dataset.from_dict({"text": (Path(setup.work) / "train.txt").read_text(encoding="utf-8").splitlines()})
    padded = lines.map(
        lambda b: tokenizer(b["text"], padding=True, truncation=True), batched=True, remove_columns=["text"]
    )
    masks = padded["attention_mask"]
    useful, positions = sum(map(sum, masks)), sum(map(len, masks))
    model = AutoModelForCausalLM.from_pretrained(base)  # every weight trains
    Trainer(
        model=model,
        args=_arguments(setup, "seed", non_padding=True),
        train_dataset=padded,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        callbacks=[timer],
    ).train()
    return {
        "parameters": base_parameters(base),
        "precision": "fp32",
        "padding_share": 1 - useful / positions,
        "full_fine_tune": True,
    }


def _arguments(setup: Setup, name: str, non_padding: bool = False, bf16: bool = False):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(Path(setup.work) / name),
        max_steps=setup.steps + 1,
        per_device_train_batch_size=setup.batch_size,
        learning_rate=2e-4,
        save_strategy="no",
        logging_steps=1_000_000,
        report_to="none",
        use_cpu=setup.device == "cpu",
        seed=42,
        include_num_input_tokens_seen="non_padding" if non_padding else "all",
        disable_tqdm=True,
        bf16=bf16,
    )
