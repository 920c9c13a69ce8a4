"""The adapter's model card: a Hugging Face README.md with a YAML header, written beside the weights."""

from __future__ import annotations

from pathlib import Path

from ..config.recipe import Recipe
from ..records import TrainingMetrics
from .manifest import WEIGHTS, Manifest


def trained_card(recipe: Recipe, metrics: TrainingMetrics) -> str:
    data = recipe.data
    source = (
        data.dataset + (f" ({data.config})" if data.config else "") if data.dataset else ", ".join(data.train_files)
    )
    base, adapted, train = metrics.base, metrics.adapted, metrics.train
    hub_dataset = (
        data.dataset if data.dataset and "/" in data.dataset and not data.dataset.startswith((".", "/")) else ""
    )
    datasets_yaml = f"datasets:\n- {hub_dataset}\n" if hub_dataset else ""
    return f"""---
base_model: {recipe.model.name}
library_name: peft
pipeline_tag: text-generation
{datasets_yaml}tags:
- gpt2-adapt
- lora
model-index:
- name: {recipe.adapter_name}
  results:
  - task:
      type: text-generation
    dataset:
      name: {source}
      type: {hub_dataset or "text"}
    metrics:
    - type: perplexity
      name: adapted perplexity
      value: {adapted.perplexity:.4f}
    - type: perplexity
      name: base perplexity
      value: {base.perplexity:.4f}
---

# {recipe.adapter_name}

A LoRA adapter (rank {recipe.lora.r}, alpha {recipe.lora.alpha:g}, on {", ".join(recipe.target_modules)}) for
`{recipe.model.name}`, trained by gpt2-adapt on {source}.

| | perplexity | tokens scored |
| --- | --- | --- |
| base | {base.perplexity:.3f} | {base.tokens:,} |
| adapted | {adapted.perplexity:.3f} | {adapted.tokens:,} |

Perplexity is exp(summed token NLL / tokens) over {_scored(metrics)}. Training: {train.steps} steps,
{train.tokens:,} tokens{_kept(metrics)}.

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("{recipe.model.name}")
model = PeftModel.from_pretrained(base, "path/to/{recipe.adapter_name}")
```

![training loss and evaluation perplexity](training.png)

The full recipe is in `recipe.toml`, the figures in `metrics.json`, the provenance (base and data
fingerprints, every file's sha256) in `manifest.json`.
"""


def _scored(metrics: TrainingMetrics) -> str:
    protocol = metrics.protocol
    if protocol.examples:
        return "the completion tokens of the evaluation examples, each example on its own"
    return f"{protocol.kind} windows of {protocol.context} tokens of the evaluation text"


def _kept(metrics: TrainingMetrics) -> str:
    kept = metrics.kept
    if not kept:
        return ""
    note = "; stopped early (no improvement)" if kept.stopped_early else ""
    return note + (f"; the adapter is that of step {kept.step}, the best evaluation" if kept.keep == "best" else "")


def imported_card(name: str, base: str, source: Path) -> str:
    return f"""---
base_model: {base}
library_name: peft
tags:
- gpt2-adapt
- lora
---

# {name}

A LoRA adapter for `{base}`, imported into a gpt2-adapt store from `{source}` and checked against its
base. It was trained elsewhere: its data and figures are not recorded here.
"""


def merged_card(
    name: str,
    base: str,
    weights: dict[str, float],
    precision: str,
    adapters: dict[str, Manifest | None],
    full_precision: list[str],
) -> str:
    """The card of a standalone model merged from adapters. `adapters`: name -> manifest (None: none)."""

    def row(adapter: str, weight: float) -> str:
        manifest = adapters.get(adapter)
        weights = manifest.files.get(WEIGHTS) if manifest else None
        sha256 = weights.sha256 if weights else "-"
        data = (manifest.dataset.label if manifest else "") or "-"
        return f"| {adapter} | {weight:g} | {data} | `{sha256[:16]}` |"

    rows = "\n".join(row(adapter, weight) for adapter, weight in weights.items())
    int8_note = (
        f"\n{', '.join(full_precision)} {'was' if len(full_precision) == 1 else 'were'} trained on a quantized base; "
        "the update was merged into the base reloaded at full precision (exact), not into quantized weights.\n"
        if full_precision
        else ""
    )
    return f"""---
base_model: {base}
library_name: transformers
pipeline_tag: text-generation
tags:
- gpt2-adapt
- lora
- merged
---

# {name}

`{base}` with LoRA adapters merged into its weights by gpt2-adapt: W' = W + sum of weight x scaling x B A,
computed in float32 and saved in {precision}. It is a plain GPT-2 checkpoint: transformers loads it without peft.

| adapter | weight | trained on | adapter_model.safetensors sha256 |
| --- | --- | --- | --- |
{rows}
{int8_note}
```python
from transformers import pipeline

generate = pipeline("text-generation", model="path/to/{name}")
print(generate("The", max_new_tokens=20)[0]["generated_text"])
```
"""
