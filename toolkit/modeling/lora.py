"""The LoRA adapter, attached to the base through peft with the recipe's rank, scaling, dropout and targets."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from ..config.recipe import TARGET_PRESETS, Recipe
from ..errors import ToolkitError


def attach_lora(model, recipe: Recipe):
    """Wrap the base in a peft LoRA model."""
    from peft import LoraConfig, get_peft_model

    targets = recipe.target_modules
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ToolkitError(
            f"lora.targets: {', '.join(missing)} match no module of {recipe.model.name}; "
            f"name some of {', '.join(layer_names(names))}, or use a preset ({', '.join(TARGET_PRESETS)})"
        )
    config = LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=targets,
        # GPT-2's Conv1D stores weights transposed; a quantized base replaces it by a normal Linear8bitLt/Linear4bit.
        fan_in_fan_out=recipe.quantization.mode == "none",
        use_dora=recipe.lora.use_dora,
        use_rslora=recipe.lora.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def layer_names(module_names: list[str]) -> list[str]:
    """The names of the layers inside GPT-2's blocks (c_attn, c_proj, c_fc, ...), each once."""
    return sorted({n.rsplit(".", 1)[-1] for n in module_names if re.search(r"\.h\.\d+\.", n)})


@dataclass(frozen=True)
class AdapterShape:
    """Which layers the adapter matched, and its trainable parameters: for the user to check before training."""

    layers: dict[str, int]  # layer pattern (blocks written h.*) -> count
    matched: int
    trainable: int
    total: int

    @property
    def share(self) -> float:
        return self.trainable / self.total


def describe_adapter(peft_model) -> AdapterShape:
    from peft.tuners.lora import LoraLayer

    matched = [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
    patterns = Counter(re.sub(r"\.h\.\d+\.", ".h.*.", name.removeprefix("base_model.model.")) for name in matched)
    return AdapterShape(
        layers=dict(patterns),
        matched=len(matched),
        trainable=sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        total=sum(p.numel() for p in peft_model.parameters()),
    )
