"""The base model: its config (checked to be GPT-2 family) and its weights, for training or for inference."""

from __future__ import annotations

import contextlib
import logging

import torch

from ..config.recipe import FOUR_BIT, Recipe
from ..errors import ToolkitError, first_line
from ..records import ModelSource
from ..sources.models import model_source
from .dropout import register_attention, use_fast_dropout
from .precision import torch_dtype, training_precision
from .quantization import keep_trainable, quantization_kwargs
from .switching import base_of

log = logging.getLogger(__name__)


def load_config(recipe: Recipe):
    """The recipe's base config, checked to be GPT-2 family, long enough for the recipe's blocks and wide
    enough for its LoRA rank."""
    config = gpt2_config(model_source(recipe.model.name, recipe.model.revision), recipe.model.name)
    problems = []
    if recipe.data.block_size > config.n_positions:
        problems.append(
            f"data.block_size: {recipe.data.block_size} exceeds the context of {recipe.model.name} "
            f"({config.n_positions} tokens); set data.block_size to at most {config.n_positions}"
        )
    if recipe.lora.r > config.n_embd:
        problems.append(
            f"lora.r: {recipe.lora.r} exceeds the width of {recipe.model.name}'s layers ({config.n_embd}); "
            f"set lora.r to at most {config.n_embd} (8 to 64 is usual)"
        )
    if problems:
        raise ToolkitError(*problems)
    return config


def gpt2_config(source: ModelSource, label: str, key: str = "model.name"):
    """A model's config, read without its weights and refused unless it is GPT-2 family; `label` is the name
    the user gave, `key` the setting they gave it in."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(**source.from_pretrained(), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"{key}: could not load {label!r}: {first_line(err)}") from None
    if config.model_type != "gpt2":
        raise ToolkitError(
            f"{key}: {label} is a {config.model_type!r} model; gpt2-adapt works with GPT-2-family checkpoints: "
            f"point {key} at gpt2, gpt2-medium/large/xl, distilgpt2 or a local GPT-2 folder"
        )
    return config


def load_base(recipe: Recipe):
    """The frozen base model for training: fp32 weights (mixed precision comes from autocast), or quantized
    (a 4-bit base computing in the training precision)."""
    source = model_source(recipe.model.name, recipe.model.revision)
    q = recipe.quantization
    # GPT-2's dropout regularised its pre-training; on the frozen base its random masks are a large share of
    # a CPU step, so a recipe may switch it off.
    no_dropout = {} if recipe.training.base_dropout else {"attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0}
    model = base_from(
        source,
        quantization=q.mode,
        compute_dtype=torch_dtype(training_precision(recipe.training.precision)),
        double_quant=q.double_quant,
        attn_implementation=training_attention(),
        **no_dropout,
    )
    if not torch.cuda.is_available():
        use_fast_dropout(model)  # the same dropout, its masks cheaper to draw on a CPU (modeling/dropout.py)
    mode = q.mode
    if mode in FOUR_BIT:
        keep_trainable(model)
    if mode != "none":
        from peft import prepare_model_for_kbit_training

        # Casts the layer norms and head to fp32 for stable training; checkpointing is the Trainer's job.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # With loss_type unset, the Trainer counts one unpredicted label per row when it normalises the loss.
    model.loss_type = "ForCausalLM"
    return model


def base_from(
    source: ModelSource,
    quantization: str = "none",
    dtype: torch.dtype = torch.float32,
    compute_dtype: torch.dtype | None = None,
    double_quant: bool = True,
    **config,
):
    """A GPT-2-family model from safetensors only, never with remote code; quantized through bitsandbytes.
    `dtype`: of the weights of a full-precision base; `compute_dtype`: of a 4-bit base's products (default
    `dtype`). `config` overrides attributes of the model's config (e.g. its dropout rates)."""
    from transformers import AutoModelForCausalLM

    kwargs = {
        "use_safetensors": True,
        "trust_remote_code": False,
        **config,
        **quantization_kwargs(quantization, compute_dtype or dtype, double_quant),
    }
    if quantization == "none":
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(**source.from_pretrained(), **kwargs)
    except (OSError, ValueError) as err:
        raise ToolkitError(f"could not load {source.path!r}: {first_line(err)}") from None
    if model.config.model_type != "gpt2":
        raise ToolkitError(
            f"{source.path} is a {model.config.model_type!r} model; "
            "gpt2-adapt works with GPT-2-family checkpoints only, so use one of those"
        )
    return model


def training_attention() -> str:
    """The attention implementation to train with. On a CPU the plain one (transformers' "eager", its
    dropout drawn by modeling/dropout.py): PyTorch's fused kernel is faster forward-only but slower backward
    there, and with dropout it falls back to a slower path still (figures: BENCHMARKS.md). On CUDA the
    fused one."""
    return "sdpa" if torch.cuda.is_available() else register_attention()


@contextlib.contextmanager
def scoring_attention(model):
    """Within: the attention fastest forward-only (sdpa), then back to training's."""
    base = base_of(model)
    training = base.config._attn_implementation
    if training == "sdpa":
        yield
        return
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(training)
