"""Merge adapters into their base: a standalone GPT-2 checkpoint that transformers loads without peft.

    toolkit.merge("wikitext103", "merged/wikitext103")
    toolkit.merge({"wikitext103": 0.7, "poems": 0.3}, "merged/mix", dtype="bfloat16", verify=True)

The base is always reloaded at full precision, whatever the adapters were trained on: merging into 8-bit
weights rounds the update (its logits came out 25x the plain int8 error off the float32 merge, measured),
while W + sum_i w_i s_i B_i A_i in float32 is exact. The result is cast to the output dtype at the end.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from . import model_card, sources
from .cache import atomic_folder, read_json
from .errors import ToolkitError
from .mixing import check_same_base, parse_weights
from .provenance import MANIFEST
from .store import AdapterStore

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# --verify: batches x rows of random token ids (at most the context long), the same on every run
VERIFY_BATCHES, VERIFY_ROWS, VERIFY_TOKENS = 3, 2, 128


@dataclass(frozen=True)
class Merged:
    path: Path  # the model folder written
    weights: dict[str, float]  # adapter -> weight
    base: str  # the base the adapters were trained on
    dtype: str  # of the saved weights
    full_precision: list[str]  # adapters trained on an 8-bit base, merged into the full-precision base
    max_difference: float | None  # with verify: largest |logit| difference, saved model vs unmerged adapters


def merge(adapters, out: str | Path, *, dtype: str | None = None, base: str | None = None,
          store: AdapterStore | str | Path | None = None, strict: bool = True, verify: bool = False,
          overwrite: bool = False) -> Merged:
    """Write the base with `adapters` merged in to the folder `out` and return what was done.

    `adapters`: a name, names, "a=0.7,b=0.3", or {name: weight}; several are mixed first (peft's `cat`,
    the exact weighted sum). `dtype`: float32, float16 or bfloat16 (default: the base checkpoint's own).
    `base` points at a local copy of the base. `verify` reloads the saved folder and compares its logits
    with the unmerged adapters' on a few batches.
    """
    from .generation import use
    from .loading import load
    from .mixing import mix

    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    weights = parse_weights([adapters] if isinstance(adapters, str) else adapters, label="merge")
    if dtype is not None and dtype not in DTYPES:
        raise ToolkitError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    manifests = {name: read_json(store.require(name) / MANIFEST) for name in weights}
    check_same_base(store, list(weights), label="merge")
    out = Path(out).expanduser()
    replace_out = _check_out(out, overwrite)
    full_precision = [name for name in weights if _trained_int8(store.path(name))]

    model, tokenizer = load(list(weights), base=base, store=store, strict=strict, int8=False, dtype=torch.float32)
    base_model = model.get_base_model()
    out_dtype = dtype or _checkpoint_dtype(base_model.config.name_or_path)
    only, weight = next(iter(weights.items()))
    if len(weights) == 1 and weight == 1.0:
        merged_name = only
        use(model, only)
    else:
        merged_name = mix(model, weights)
    batches = _verify_batches(base_model.config) if verify else []
    reference = [_logits(model, batch) for batch in batches]

    merged = model.merge_and_unload(adapter_names=[merged_name])  # a new model, no peft layers left
    merged = merged.to(device="cpu", dtype=DTYPES[out_dtype])
    merged.generation_config.pad_token_id = tokenizer.pad_token_id  # batched generation needs one
    base_label = base or manifests[only].get("base", {}).get("name") or base_model.config.name_or_path
    with atomic_folder(out, replace=replace_out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = model_card.render_merged(out.resolve().name, base_label, weights, out_dtype, manifests, full_precision)
        (tmp / "README.md").write_text(card, encoding="utf-8")

    difference = None
    if verify:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
        difference = max((_logits(saved, batch) - ref).abs().max().item() for batch, ref in zip(batches, reference))
    return Merged(out, weights, base_label, out_dtype, full_precision, difference)


def _check_out(out: Path, overwrite: bool) -> bool:
    """Whether the output folder is to be replaced; refuses to write over anything but a model folder."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise ToolkitError(f"--out: {out} is a file; name a folder to write the model to")
    if not any(out.iterdir()):
        return True
    if not overwrite:
        raise ToolkitError(f"--out: {out} exists and is not empty; pass --overwrite to replace it, or choose another folder")
    if not (out / "config.json").is_file():
        raise ToolkitError(f"--out: {out} does not look like a model folder (no config.json); refusing to replace it")
    return True


def _trained_int8(folder: Path) -> bool:
    recipe = folder / "recipe.toml"
    if not recipe.is_file():
        return False  # imported: not recorded
    try:
        return tomllib.loads(recipe.read_text())["quantization"]["mode"] == "int8"
    except (tomllib.TOMLDecodeError, KeyError, TypeError):
        return False


def _checkpoint_dtype(name_or_path: str) -> str:
    """The dtype the base checkpoint declares (float32 when it declares none or another)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(**sources.model_source(name_or_path), trust_remote_code=False)
    declared = getattr(config, "dtype", None)
    name = str(declared).removeprefix("torch.") if declared is not None else "float32"
    return name if name in DTYPES else "float32"


def _verify_batches(config) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = min(VERIFY_TOKENS, config.n_positions)
    return [torch.randint(config.vocab_size, (VERIFY_ROWS, tokens), generator=generator) for _ in range(VERIFY_BATCHES)]


def _logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(input_ids=input_ids.to(device)).logits.float().cpu()
