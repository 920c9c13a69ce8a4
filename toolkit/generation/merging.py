"""Merge adapters into their base: a standalone GPT-2 checkpoint that transformers loads without peft.

    toolkit.merge("wikitext103", "merged/wikitext103")
    toolkit.merge({"wikitext103": 0.7, "poems": 0.3}, "merged/mix", precision="bf16", verify=True)

The base is always reloaded at full precision, whatever the adapters were trained on: merging into 8-bit or
4-bit weights rounds the update (far more than the plain quantization error, see docs/generation.md), while
W + sum_i w_i s_i B_i A_i in float32 is exact. The result is cast to the output precision at the end.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ToolkitError, param
from ..files import atomic_folder
from ..modeling.mixing import mix, parse_weights
from ..modeling.precision import FULL_PRECISIONS, checkpoint_precision, torch_dtype
from ..modeling.switching import base_of, use
from ..sources.models import model_source
from ..store import card
from ..store.loading import load
from ..store.store import AdapterStore

# verify: batches x rows of random token ids (at most the context long), the same on every run
VERIFY_BATCHES, VERIFY_ROWS, VERIFY_TOKENS = 3, 2, 128


@dataclass(frozen=True)
class Merged:
    path: Path  # the model folder written
    weights: dict[str, float]  # adapter -> weight
    base: str  # the base the adapters were trained on
    precision: str  # of the saved weights: fp32, bf16 or fp16
    # adapters trained on a quantized (int8, nf4, fp4) base, merged into the full-precision one
    full_precision: list[str]
    max_difference: float | None  # with verify: largest |logit| difference, saved model vs unmerged adapters

    def to_json(self) -> dict:
        """What `gpt2-adapt merge --json` prints."""
        return {**dataclasses.asdict(self), "path": str(self.path)}


def merge(
    adapters,
    out: str | Path,
    *,
    precision: str | None = None,
    base: str | None = None,
    store: AdapterStore | str | Path | None = None,
    strict: bool = True,
    verify: bool = False,
    overwrite: bool = False,
) -> Merged:
    """Write the base with `adapters` merged in to the folder `out` and return what was done.

    `adapters`: a name, names, "a=0.7,b=0.3", or {name: weight}; several are mixed first (peft's `cat`,
    the exact weighted sum). `precision`: fp32, bf16 or fp16 (default: the base checkpoint's own). `base`
    points at a local copy of the base. `verify` reloads the saved folder and compares its logits with the
    unmerged adapters' on a few batches.
    """
    store = store if isinstance(store, AdapterStore) else AdapterStore(store)
    weights = parse_weights([adapters] if isinstance(adapters, str) else adapters, label="merge")
    if precision is not None and precision not in FULL_PRECISIONS:
        raise ToolkitError(f"{param('precision')}: {precision!r} is not one of {', '.join(FULL_PRECISIONS)}")
    manifests = {name: store.info(name).manifest for name in weights}
    out = Path(out).expanduser()
    replace_out = check_out(out, overwrite, store)
    full_precision = [name for name in weights if trained_quantized(store, name)]

    model, tokenizer, merged_name = load_to_merge(weights, base=base, store=store, strict=strict)
    base_model = base_of(model)
    out_precision = precision or checkpoint_precision(_checkpoint_config(base_model.config.name_or_path))
    batches = verify_batches(base_model.config) if verify else []
    reference = [batch_logits(model, batch) for batch in batches]

    merged = model.merge_and_unload(adapter_names=[merged_name])  # a new model, no peft layers left
    merged = merged.to(device="cpu", dtype=torch_dtype(out_precision))
    merged.generation_config.pad_token_id = tokenizer.pad_token_id  # batched generation needs one
    recorded = store.base_for(list(weights))
    base_label = base or (recorded.name if recorded else base_model.config.name_or_path)
    with atomic_folder(out, replace=replace_out) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        text = card.merged_card(out.resolve().name, base_label, weights, out_precision, manifests, full_precision)
        (tmp / "README.md").write_text(text, encoding="utf-8")

    difference = None
    if verify:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, use_safetensors=True).eval()
        difference = max(
            (batch_logits(saved, batch) - ref).abs().max().item() for batch, ref in zip(batches, reference)
        )
    return Merged(out, weights, base_label, out_precision, full_precision, difference)


def load_to_merge(weights: dict[str, float], *, base: str | None, store: AdapterStore, strict: bool):
    """(peft model, tokenizer, adapter name): the adapters loaded onto the base at full precision, verified,
    with the one adapter to merge active: the adapter itself, or the exact weighted sum of several (a mix).
    Merging and exporting start from here."""
    model, tokenizer = load(list(weights), base=base, store=store, strict=strict, precision="fp32")
    only, weight = next(iter(weights.items()))
    if len(weights) == 1 and weight == 1.0:
        use(model, only)
        return model, tokenizer, only
    return model, tokenizer, mix(model, weights)


def check_out(
    out: Path, overwrite: bool, store: AdapterStore, marker: str = "config.json", kind: str = "a model"
) -> bool:
    """Whether the output folder is to be replaced; refuses the store itself and any folder without `marker`
    (the file that every folder of this `kind` holds: what is written there is not someone else's)."""
    target, root = out.resolve(), store.root.resolve()
    if target == root or root in target.parents or target in root.parents:
        raise ToolkitError(
            f"{param('out')}: {out} is inside the adapter store {store.root} (or holds it); choose a folder "
            "outside the store"
        )
    if not out.exists():
        return False
    if not out.is_dir():
        raise ToolkitError(f"{param('out')}: {out} is a file; name a folder to write to")
    if not any(out.iterdir()):
        return True
    if not overwrite:
        raise ToolkitError(
            f"{param('out')}: {out} exists and is not empty; pass {param('overwrite', True)} to replace it, "
            "or choose another folder"
        )
    if not (out / marker).is_file():
        raise ToolkitError(
            f"{param('out')}: {out} does not look like {kind} folder (no {marker}); refusing to replace it"
        )
    return True


def trained_quantized(store: AdapterStore, name: str) -> bool:
    """Whether the adapter was trained on a quantized base (imported ones record no recipe: not known)."""
    try:
        recipe = store.trained_recipe(name)
    except ToolkitError:  # a damaged recipe.toml, merged past verification: not known either
        return False
    return recipe is not None and recipe.quantization.mode != "none"


def _checkpoint_config(name_or_path: str):
    """The base checkpoint's config as saved (the loaded model's says fp32: it was loaded at full precision)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(**model_source(name_or_path).from_pretrained(), trust_remote_code=False)


def verify_batches(config) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    tokens = min(VERIFY_TOKENS, config.n_positions)
    return [torch.randint(config.vocab_size, (VERIFY_ROWS, tokens), generator=generator) for _ in range(VERIFY_BATCHES)]


def batch_logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.inference_mode():
        return model(input_ids=input_ids.to(device)).logits.float().cpu()
