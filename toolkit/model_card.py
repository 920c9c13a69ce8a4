"""The adapter's model card: a Hugging Face README.md with a YAML header, written beside the weights."""

from __future__ import annotations

from .recipe import Recipe


def render(recipe: Recipe, metrics: dict) -> str:
    data = recipe.data
    source = data.dataset + (f" ({data.config})" if data.config else "") if data.dataset else ", ".join(data.train_files)
    base, adapted, train = metrics["base"], metrics["adapted"], metrics["train"]
    return f"""---
base_model: {recipe.model.name}
library_name: peft
pipeline_tag: text-generation
tags:
- gpt2-adapt
- lora
---

# {recipe.adapter_name}

A LoRA adapter (rank {recipe.lora.r}, alpha {recipe.lora.alpha:g}, on {", ".join(recipe.target_modules)}) for
`{recipe.model.name}`, trained by gpt2-adapt on {source}.

| | perplexity | tokens scored |
| --- | --- | --- |
| base | {base["perplexity"]:.3f} | {base["tokens"]:,} |
| adapted | {adapted["perplexity"]:.3f} | {adapted["tokens"]:,} |

Perplexity is exp(summed token NLL / tokens) over disjoint blocks of {data.block_size} tokens of the
evaluation text. Training: {train["steps"]} steps, {train["tokens"]:,} tokens.

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM

base = AutoModelForCausalLM.from_pretrained("{recipe.model.name}")
model = PeftModel.from_pretrained(base, "path/to/{recipe.adapter_name}")
```

The full recipe is in `recipe.toml`, the figures in `metrics.json`.
"""
