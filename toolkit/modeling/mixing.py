"""Weighted mixes of LoRA adapters: the weights ("a=0.7,b=0.3") and the mix itself.

A mix is peft's `cat` combination: the adapters' LoRA factors are stacked (its rank is the sum of theirs,
the weights folded into A, its own scaling 1), so its update is exactly sum_i w_i * s_i * B_i A_i for any
ranks. peft's `linear` combination needs equal ranks and is not that sum; `svd` truncates it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Mapping, Sequence

from ..errors import ToolkitError, param
from .prompting import prompt_format, prompt_template, record_prompt_format
from .switching import loaded_adapters, use

# Mixes are peft adapters named by their weights' hash: peft's names cannot hold "." (module-dict keys).
MIX_PREFIX = "mix-"
_DESCRIPTIONS: dict[str, str] = {}  # mix name -> "a=0.7,b=0.3"; names are hashes, so this never goes stale
EXAMPLE = "wikitext103=0.7,poems=0.3"
MAX_WEIGHT = 100.0  # a larger weight scales an adapter's update past anything meaningful, up to inf/NaN logits


def parse_weights(
    spec: str | Sequence[str] | Mapping[str, float], *, label: str | None = None, known: Collection[str] | None = None
) -> dict[str, float]:
    """{name: weight} from "a=0.7,b=0.3", ["a=0.7", "b"] (a bare name weighs 1) or a mapping.

    Every problem is reported at once: an empty item, a weight that is not a finite number or beyond
    +-MAX_WEIGHT, a name given
    twice, a name not in `known` (when given), and weights that sum to zero. `label` names the setting.
    """
    label = label or param("mix")
    if isinstance(spec, Mapping):
        items = [(str(name), weight) for name, weight in spec.items()]
    else:
        parts = spec.split(",") if isinstance(spec, str) else [p for item in spec for p in str(item).split(",")]
        items = [(p.partition("=")[0].strip(), p.partition("=")[2].strip() if "=" in p else 1.0) for p in parts]
    problems, weights = [], {}
    for name, raw in items:
        if not name:
            problems.append(
                f"{label}: an item has no adapter name; write NAME=WEIGHT items separated by commas, e.g. {EXAMPLE}"
            )
            continue
        weight = _number(raw)
        if weight is None:
            problems.append(f"{label}: the weight of {name!r} ({raw!r}) is not a finite number; write e.g. {name}=0.5")
        elif abs(weight) > MAX_WEIGHT:
            problems.append(
                f"{label}: the weight of {name!r} ({weight:g}) is beyond +-{MAX_WEIGHT:g}, which scales its update "
                f"past anything meaningful; write a weight between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}"
            )
        elif name in weights:
            problems.append(f"{label}: {name!r} is given twice; name each adapter once")
        elif known is not None and name not in known:
            problems.append(f"{label}: no adapter named {name!r} (known: {', '.join(sorted(known)) or 'none'})")
        else:
            weights[name] = weight
    if not problems and not weights:
        problems.append(f"{label}: no adapters given; write e.g. {EXAMPLE}")
    if not problems and math.isclose(sum(weights.values()), 0.0, abs_tol=1e-12):
        problems.append(f"{label}: the weights sum to zero; give weights with a non-zero sum, e.g. {EXAMPLE}")
    if problems:
        raise ToolkitError(*problems)
    return weights


def describe(weights: Mapping[str, float]) -> str:
    """ "a=0.7,b=0.3": how messages, model cards and mix names name a mix. Each weight is written exactly
    (the shortest text that reads back as the same float), so different weights never share a name."""
    return ",".join(f"{name}={_exact(weight)}" for name, weight in weights.items())


def _exact(weight: float) -> str:
    text = repr(float(weight))
    return text.removesuffix(".0")


def label(adapter: str | None) -> str:
    """How messages name what runs: "base", an adapter's name, or "mix a=0.7,b=0.3"."""
    if adapter is None:
        return "base"
    return f"mix {_DESCRIPTIONS[adapter]}" if adapter in _DESCRIPTIONS else adapter


def mix(model, weights: str | Sequence[str] | Mapping[str, float]) -> str:
    """Add the weighted sum of loaded adapters to a peft model as one adapter, make it active, return its
    name. The same weights give the same adapter, built once; weights that differ in any digit, another."""
    loaded = [name for name in loaded_adapters(model) if not name.startswith(MIX_PREFIX)]
    weights = parse_weights(weights, label="mix", known=loaded)
    problems = [problem for name in weights if (problem := _unmixable(model.peft_config[name], name))]
    unlike = prompted_differently({name: prompt_template(model, name) for name in weights})
    if unlike:
        problems.append(unlike)
    if problems:
        raise ToolkitError(*problems)
    mixed = MIX_PREFIX + hashlib.sha256(describe(weights).encode()).hexdigest()[:16]
    _DESCRIPTIONS[mixed] = describe(weights)
    if mixed not in model.peft_config:
        # With one adapter peft falls back to `linear`, which splits w * s as sqrt into A and B: the same update.
        model.add_weighted_adapter(list(weights), list(weights.values()), mixed, combination_type="cat")
        # The mix is prompted (and its examples read) as its adapters are.
        record_prompt_format(model, mixed, prompt_format(model, next(iter(weights))))
    use(model, mixed)
    return mixed


def _unmixable(config, name: str) -> str | None:
    """Why an adapter cannot be part of an exact weighted sum, or None. A DoRA adapter's magnitude vector
    rescales W + BA as a whole, so its update is no sum of LoRA updates. rsLoRA mixes: peft's `cat` folds
    each adapter's own scaling (alpha / sqrt(r)) into its rows and gives the mix a scaling of 1."""
    if not config.use_dora:
        return None
    return (
        f"mix: adapter {name!r} uses DoRA, whose magnitude vector rescales the whole weight, so its update is "
        "not a weighted sum of LoRA updates; use it alone (generate or merge it by itself), or mix LoRA adapters"
    )


def prompted_differently(templates: Mapping[str, str | None]) -> str | None:
    """Why adapters cannot be mixed, given each one's prompt template (None: text), or None when they can: a
    mix is prompted as its adapters are, so they must all be prompted alike."""
    if len(set(templates.values())) <= 1:
        return None

    def one(name: str, template: str | None) -> str:
        return f"{name}: text" if template is None else f"{name}: template {template!r}"

    return (
        f"mix: {', '.join(map(repr, templates))} are prompted differently "
        f"({'; '.join(one(name, template) for name, template in templates.items())}); "
        "use adapters trained on one data format and template"
    )


def _number(raw) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
