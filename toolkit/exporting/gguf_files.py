"""GGUF files for llama.cpp, written with the `gguf` package: a GPT-2 model (base or merged) and a LoRA adapter.

llama.cpp's own `convert_lora_to_gguf.py` transposes GPT-2's LoRA pair as it transposes the Conv1D weights,
which is wrong: peft stores Conv1D LoRA the Linear way (A is (r, in), B is (out, r)), exactly what llama.cpp
wants. Only the base's Conv1D weights, stored (in, out), are transposed here. The vocabulary is written too
(tokens, merges, pre-tokenizer "gpt-2"): llama.cpp refuses a GPT-2 model without its merges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ToolkitError, param
from ..modeling.switching import base_of

# --type: the GGML type of the 2-D weights; 1-D tensors (norms, biases) are always F32, as llama.cpp's
# converter writes them.
TYPES = ("f32", "f16", "bf16", "q8_0")
ARCH = "gpt2"


@dataclass(frozen=True)
class LoraPair:
    """One LoRA update of a GPT-2 projection: W x + scale * B (A x)."""

    module: str  # the projection's name in the transformers model, e.g. transformer.h.0.attn.c_attn
    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float  # peft's scaling (alpha / r, or alpha / sqrt(r) with rsLoRA; 1 for a mix)


def write_model(path: Path, model, tokenizer, tensor_type: str) -> None:
    """A transformers GPT2LMHeadModel as a GGUF model file at `path`: its base weights, LoRA layers (if peft
    has wrapped some) left out."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name(Path(str(config.name_or_path)).name or "gpt2")
    writer.add_context_length(config.n_positions)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(config.layer_norm_epsilon)
    writer.add_file_type(_file_type(tensor_type))
    _write_vocabulary(writer, tokenizer, config.vocab_size)
    for name, data in base_tensors(model).items():
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ToolkitError(f"the base's tensor {name!r} has no place in llama.cpp's GPT-2; export a GPT-2 model")
        _add_tensor(writer, gguf_name, data, tensor_type)
    _finish(writer)


def base_tensors(model) -> dict[str, torch.Tensor]:
    """The model's own weights by transformers name, each (out, in) as GGML wants it: Conv1D's (in, out)
    transposed. Skips peft's LoRA layers (a wrapped layer's `base_layer` is the weight) and a tied lm_head
    (llama.cpp then reuses token_embd as the output, as GPT-2 does)."""
    from transformers.pytorch_utils import Conv1D

    tensors, seen = {}, set()
    for module_name, module in model.named_modules():
        if ".lora_" in f".{module_name}" or module_name.endswith("lora_magnitude_vector"):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen or ".lora_" in f".{name}":
                continue
            seen.add(id(parameter))
            data = parameter.detach().float()
            if isinstance(module, Conv1D) and name == "weight":
                data = data.T
            tensors[f"{module_name.replace('.base_layer', '')}.{name}"] = data
    return tensors


def lora_pairs(model, adapter: str) -> list[LoraPair]:
    """The LoRA pairs of one adapter of a peft model, by the projection they update."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in base_of(model).named_modules():
        if not isinstance(module, LoraLayer):
            continue
        if adapter in getattr(module, "lora_embedding_A", {}):
            raise ToolkitError(
                f"the adapter updates the embedding {name!r}, which llama.cpp's LoRA cannot; export it merged"
            )
        if adapter in module.lora_A:
            pairs.append(
                LoraPair(
                    name, module.lora_A[adapter].weight, module.lora_B[adapter].weight, float(module.scaling[adapter])
                )
            )
    return pairs


def write_lora(path: Path, pairs: list[LoraPair], n_layer: int, tensor_type: str) -> float:
    """The LoRA pairs as a GGUF adapter file at `path`; returns the alpha written.

    llama.cpp scales each pair by alpha / r (r: the rows of A). When every pair's peft scaling is alpha / r for
    one alpha, A and B are written as stored with that alpha; otherwise (rsLoRA, per-module alphas, mixes) each
    pair's scaling is folded into B and alpha 0 tells llama.cpp to apply none of its own.
    """
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, n_layer)
    alphas = {round(pair.scale * pair.a.shape[0], 6) for pair in pairs}
    alpha = alphas.pop() if len(alphas) == 1 else 0.0
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for pair in pairs:
        gguf_name = names.get_name(f"{pair.module}.weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ToolkitError(f"the adapter's LoRA on {pair.module!r} has no place in llama.cpp's GPT-2")
        b = pair.b.detach().float() * (1.0 if alpha else pair.scale)
        _add_tensor(writer, f"{gguf_name}.lora_a", pair.a.detach().float(), tensor_type)
        _add_tensor(writer, f"{gguf_name}.lora_b", b, tensor_type)
    _finish(writer)
    return alpha


def _add_tensor(writer, name: str, data: torch.Tensor, tensor_type: str) -> None:
    """Add one tensor in the asked type: 1-D in F32; a 2-D tensor whose rows do not split into the type's
    blocks (Q8_0: 32 values) in F16, as llama.cpp's converter falls back."""
    import gguf

    array = data.contiguous().numpy().astype(np.float32)
    qtype = _ggml_type(tensor_type) if array.ndim > 1 else gguf.GGMLQuantizationType.F32
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        qtype = gguf.GGMLQuantizationType.F16
    writer.add_tensor(name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def _write_vocabulary(writer, tokenizer, vocab_size: int) -> None:
    """Tokens (by id, padded to the model's vocabulary size), their types, the BPE merges, the special ids."""
    import gguf

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    model = state.get("model", {})
    if model.get("type") != "BPE":
        raise ToolkitError(
            f"the tokenizer is {model.get('type')!r}, not a byte-level BPE like GPT-2's; llama.cpp's gpt2 vocabulary "
            "cannot hold it"
        )
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    special = {added["id"] for added in state.get("added_tokens", []) if added.get("special")}
    size = max(vocab_size, len(by_id))
    tokens, types = [], []
    for index in range(size):
        if index in by_id:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.CONTROL if index in special else gguf.TokenType.NORMAL)
        else:  # rows of the embedding that no token uses (a vocabulary padded for speed)
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for add, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
    ):
        if token_id is not None:
            add(token_id)
    # The toolkit puts no BOS or EOS around a prompt; llama.cpp must not either, or the texts differ.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def _ggml_type(tensor_type: str):
    import gguf

    if tensor_type not in TYPES:
        raise ToolkitError(f"{param('tensor_type')}: {tensor_type!r} is not one of {', '.join(TYPES)}")
    return {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
        "q8_0": gguf.GGMLQuantizationType.Q8_0,
    }[tensor_type]


def _file_type(tensor_type: str):
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[tensor_type]


def _finish(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
