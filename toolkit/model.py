"""The model: tokenizer, base weights (full precision or 8-bit), and the LoRA adapter attached through peft."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from pathlib import Path

import torch

from . import sources
from .errors import ToolkitError, first_line
from .recipe import TARGET_PRESETS, Recipe

log = logging.getLogger(__name__)

# A model folder holds its tokenizer as one of these (the fast tokenizer's file, or GPT-2's vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def resolve_precision(precision: str) -> str:
    """"auto" means bf16 (else fp16) mixed precision on CUDA, bf16 on CPUs that multiply bf16 natively
    (AVX512-BF16 or AMX: about twice the fp32 speed), and fp32 on other CPUs, where bf16 is emulated and slow."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    # torch.cpu's feature probes are private; a torch without them is treated as a CPU without bf16.
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def load_config(recipe: Recipe):
    """The base model's config, checked to be GPT-2 family and long enough for the recipe's blocks."""
    config = gpt2_config(recipe.model.name, recipe.model.revision, key="model.name")
    if recipe.data.block_size > config.n_positions:
        raise ToolkitError(
            f"data.block_size: {recipe.data.block_size} exceeds the context of {recipe.model.name} "
            f"({config.n_positions} tokens); set data.block_size to at most {config.n_positions}"
        )
    return config


def gpt2_config(name: str, revision: str = "main", key: str = "model.name"):
    """A model's config, read without its weights and refused unless it is GPT-2 family; `key` is the
    recipe key or option the user named it with."""
    from transformers import AutoConfig

    source = sources.model_source(name, revision, key=key)
    try:
        config = AutoConfig.from_pretrained(**source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"{key}: could not load {name!r}: {first_line(err)}") from None
    if config.model_type != "gpt2":
        raise ToolkitError(
            f"{key}: {name} is a {config.model_type!r} model; gpt2-adapt works with GPT-2-family checkpoints: "
            f"point {key} at gpt2, gpt2-medium/large/xl, distilgpt2 or a local GPT-2 folder"
        )
    return config


def load_tokenizer(recipe: Recipe):
    return tokenizer_from(sources.model_source(recipe.model.name, recipe.model.revision), recipe.model.name)


def tokenizer_from(source: dict, label: str | None = None):
    """The fast tokenizer of a model source, with EOS doubling as the (left) padding token."""
    from transformers import AutoTokenizer

    label = label or source["pretrained_model_name_or_path"]
    folder = Path(source["pretrained_model_name_or_path"])
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        # transformers would build an empty tokenizer here without a word, and training would go on with it.
        raise ToolkitError(
            f"model.name: {label} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into that folder too (tokenizer.save_pretrained)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(**source, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"model.name: could not load the tokenizer of {label!r}: {first_line(err)}") from None
    if tokenizer.pad_token is None:  # GPT-2 has none; batched generation needs one, packed training never pads
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    return tokenizer


def load_base(recipe: Recipe):
    """The frozen base model for training: fp32 weights (mixed precision comes from autocast), or 8-bit."""
    source = sources.model_source(recipe.model.name, recipe.model.revision)
    int8 = recipe.quantization.mode == "int8"
    # GPT-2's dropout regularised its pre-training; on the frozen base its random masks cost about a quarter
    # of a CPU step, so a recipe may switch it off.
    no_dropout = {} if recipe.training.base_dropout else {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    model = base_from(source, int8=int8, attn_implementation=training_attention(), **no_dropout)
    if int8:
        from peft import prepare_model_for_kbit_training

        # Casts the layer norms and head to fp32 for stable training; checkpointing is the Trainer's job.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # With loss_type unset, the Trainer counts one unpredicted label per row when it normalises the loss.
    model.loss_type = "ForCausalLM"
    return model


def training_attention() -> str:
    """The attention implementation to train with. On a CPU the plain one ("eager"): PyTorch's fused kernel
    is faster forward-only but slower backward, and with dropout it falls back to a slower path still
    (training 1.33x faster with eager, 1.15x without dropout: BENCHMARKS.md). On CUDA the fused one."""
    return "sdpa" if torch.cuda.is_available() else "eager"


@contextlib.contextmanager
def scoring_attention(model):
    """Within: the attention fastest forward-only (sdpa, 1.2x eager on a CPU), then back to training's."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    training = base.config._attn_implementation
    if training == "sdpa":
        yield
        return
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(training)


def base_from(source: dict, int8: bool = False, dtype: torch.dtype = torch.float32, **config):
    """A GPT-2-family model from safetensors only, never with remote code; 8-bit through bitsandbytes.
    `config` overrides attributes of the model's config (e.g. its dropout rates)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"use_safetensors": True, "trust_remote_code": False, **config}
    if int8:
        from transformers import BitsAndBytesConfig

        device_map = {"": int(os.environ.get("LOCAL_RANK", 0))} if torch.cuda.is_available() else None
        kwargs |= {"quantization_config": BitsAndBytesConfig(load_in_8bit=True), "device_map": device_map}
    else:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(**source, **kwargs)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"could not load {source['pretrained_model_name_or_path']!r}: {first_line(err)}") from None
    if model.config.model_type != "gpt2":
        raise ToolkitError(
            f"{source['pretrained_model_name_or_path']} is a {model.config.model_type!r} model; "
            "gpt2-adapt works with GPT-2-family checkpoints only, so use one of those"
        )
    return model


def attach_lora(model, recipe: Recipe):
    """Wrap the base in a peft LoRA model with the recipe's rank, scaling, dropout and target modules."""
    from peft import LoraConfig, get_peft_model

    targets = recipe.target_modules
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        layers = sorted({n.rsplit(".", 1)[-1] for n in names if re.search(r"\.h\.\d+\.", n)})
        raise ToolkitError(
            f"lora.targets: {', '.join(missing)} match no module of {recipe.model.name}; "
            f"name some of {', '.join(layers)}, or use a preset ({', '.join(TARGET_PRESETS)})"
        )
    config = LoraConfig(
        r=recipe.lora.r,
        lora_alpha=recipe.lora.alpha,
        lora_dropout=recipe.lora.dropout,
        target_modules=targets,
        # GPT-2's Conv1D stores weights transposed; the 8-bit base replaces it by a normal Linear8bitLt.
        fan_in_fan_out=recipe.quantization.mode != "int8",
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def describe_adapter(peft_model) -> dict:
    """Matched layers and trainable parameter counts, for the user to check before training starts."""
    from peft.tuners.lora import LoraLayer

    matched = [name for name, module in peft_model.named_modules() if isinstance(module, LoraLayer)]
    patterns = Counter(re.sub(r"\.h\.\d+\.", ".h.*.", name.removeprefix("base_model.model.")) for name in matched)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return {
        "layers": dict(patterns),
        "matched": len(matched),
        "trainable": trainable,
        "total": total,
        "share": trainable / total,
    }

