"""What the server offers: the base and the store's adapters, and what a request's `model` names.

`model` is an adapter's name, the base's name (the plain base), or a weighted mix "a=0.7,b=0.3" (a bare
name weighing 1) of adapters, as `toolkit.mix` takes it. The store is read afresh on every call, so an
adapter trained into it while the server runs is offered at once and one removed is gone.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass

from ..config.names import is_valid_name
from ..errors import ToolkitError, param
from ..generation.mixing import describe, parse_weights
from ..store.store import AdapterStore
from .errors import BadRequest, ModelNotFound
from .types import ModelCard

MIX_LABEL = "mix"  # how metrics name every mix: their weights are the client's to choose, without bound


@dataclass(frozen=True)
class Target:
    """What a request runs on: the base (no weights), one adapter, or a weighted mix of adapters."""

    name: str  # as responses and logs name it
    weights: tuple[tuple[str, float], ...] = ()  # (adapter, weight); one adapter alone: ((name, 1.0),)
    mix: bool = False
    template: str | None = None  # a prompt/completion adapter's (or its mix's); "": the prompt alone; None: text

    @property
    def adapters(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.weights)

    @property
    def description(self) -> str:
        """How messages name it: "the base", "adapter 'poems'", "the mix 'a=0.7,b=0.3'"."""
        if not self.weights:
            return "the base"
        return f"the mix {self.name!r}" if self.mix else f"adapter {self.name!r}"

    @property
    def metric_label(self) -> str:
        return MIX_LABEL if self.mix else self.name


class Catalog:
    def __init__(self, store: AdapterStore, base: str, started: int):
        self.store, self.base, self.started = store, base, started

    def cards(self) -> list[ModelCard]:
        """The base, then every adapter of the store (a damaged one too: asking for it says what is wrong)."""
        cards = [ModelCard(id=self.base, created=self.started, root=self.base)]
        for name in self.store.names():
            try:
                row = self.store.info(name).summary()
            except ToolkitError:  # a symbolic link or a renamed copy: not an adapter the server serves
                continue
            cards.append(ModelCard(
                id=name, created=_timestamp(row["created"]) or self.started, root=row["base"] or self.base,
                parent=row["base"] or self.base, dataset=row["dataset"] or None,
                base_perplexity=row["base_perplexity"], adapted_perplexity=row["adapted_perplexity"],
            ))
        return cards

    def target(self, model: str) -> Target:
        """What `model` names, or a 404 listing what there is (a 400 for a malformed mix)."""
        if model == self.base:
            return Target(model)
        if "=" in model or "," in model:
            try:
                weights = parse_weights(model, label="model")
            except ToolkitError as err:
                raise BadRequest("; ".join(err.problems), param="model") from None
            for name in weights:
                self._require(name, f"the mix {model!r} names adapter {name!r}, which is not in the store")
            return Target(describe(weights), tuple(weights.items()), mix=True, template=self._mix_template(weights))
        self._require(model, f"no model named {model!r}")
        return Target(model, ((model, 1.0),), template=self._template(model))

    def _template(self, name: str) -> str | None:
        """The template `attach` will record for the adapter: its recipe's, for prompt/completion data."""
        try:
            recipe = self.store.trained_recipe(name)
        except ToolkitError:  # a damaged recipe: verification refuses the adapter when it is loaded
            return None
        return recipe.data.template if recipe is not None and recipe.data.examples else None

    def _mix_template(self, weights: dict[str, float]) -> str | None:
        """A mix is prompted as its adapters are; adapters prompted differently are not mixed (toolkit.mix
        refuses them too: refused here, before the request is queued)."""
        templates = {name: self._template(name) for name in weights}
        if len(set(templates.values())) > 1:
            how = "; ".join(f"{name}: text" if t is None else f"{name}: template {t!r}" for name, t in templates.items())
            raise BadRequest(f"the mix {describe(weights)!r} mixes adapters prompted differently ({how}); mix adapters "
                             "trained on one data format and template", param="model")
        return next(iter(templates.values()))

    def _require(self, name: str, what: str) -> None:
        if is_valid_name(name) and self.store.exists(name):
            return
        known = ", ".join([self.base, *self.store.names()])
        raise ModelNotFound(f"{what}; this server has: {known} (GET /v1/models lists them)", param="model")


def choose_base(store: AdapterStore, base: str | None, preload: tuple[str, ...] = ()) -> str:
    """The base to serve: the one given, else the one the preloaded adapters record, else the one most of
    the store's adapters record."""
    if base:
        return base
    recorded = {}
    for name in store.names():
        try:
            recorded[name] = store.info(name).summary()["base"]
        except ToolkitError:
            continue
    for name in preload:
        if recorded.get(name):
            return recorded[name]
    counts = Counter(b for b in recorded.values() if b)
    if not counts:
        raise ToolkitError(
            f"nothing to serve: the store {store.root} holds no adapter that records its base; "
            f"train one into it, point {store.setting} at another store, or name the model with {param('base')}"
        )
    return counts.most_common(1)[0][0]


def _timestamp(created: str | None) -> int | None:
    if not created:
        return None
    try:
        return int(datetime.datetime.fromisoformat(created).timestamp())
    except ValueError:
        return None
