"""What the server offers: the base and the store's adapters, and what a request's `model` names.

`model` is an adapter's name, the base's name (the plain base), or a weighted mix "a=0.7,b=0.3" (a bare
name weighing 1) of adapters, as `toolkit.mix` takes it. The store is read afresh on every call, so an
adapter trained into it while the server runs is offered at once and one removed is gone.

What a client sends comes back in messages only cut short (`shown`): a name of megabytes, or a mix of
thousands of adapters, is refused in a line.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.names import is_valid_name
from ..errors import ToolkitError, param
from ..modeling.mixing import describe, parse_weights, prompted_differently
from ..store.manifest import BaseRecord
from ..store.store import AdapterStore
from .errors import BadRequest, ModelNotFound, message
from .types import ModelCard

MIX_LABEL = "mix"  # how metrics name every mix: their weights are the client's to choose, without bound
MAX_MIX = 16  # adapters in one mix
SHOWN_CHARS = 80  # of a client's text in a message
SHOWN_NAMES = 20  # of the store's names in a 404


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` as a message quotes it: repr'd, and cut short when long."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


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
        self.store, self.base, self.started = store, base, started  # base: its name, as `model` names it

    def cards(self) -> list[ModelCard]:
        """The base, then every adapter of the store; a damaged one too, its card saying what is wrong in
        `error` (asking for it says so as well)."""
        cards = [ModelCard(id=self.base, created=self.started, root=self.base)]
        for name in self.names():
            try:
                info = self.store.info(name)
            except ToolkitError:  # removed, or turned into a link, while the listing was read
                continue
            row = info.summary()
            try:
                cards.append(
                    ModelCard(
                        id=name,
                        created=info.manifest.timestamp if info.manifest else self.started,
                        root=row["base"] or self.base,
                        parent=row["base"] or self.base,
                        dataset=row["dataset"] or None,
                        base_perplexity=row["base_perplexity"],
                        adapted_perplexity=row["adapted_perplexity"],
                        error="; ".join(row["problems"]) or None,
                    )
                )
            except ValueError as err:  # figures or a base name of the wrong type (pydantic's error says which)
                cards.append(
                    ModelCard(
                        id=name,
                        created=self.started,
                        root=self.base,
                        parent=self.base,
                        error=f"its records are damaged: {_field_problem(err)}",
                    )
                )
        return cards

    def names(self) -> list[str]:
        """The adapters the server serves: the store's, less folders that are links or renamed copies."""
        return [name for name in self.store.names() if self.store.refusal(name) is None]

    def target(self, model: str) -> Target:
        """What `model` names, or a 404 listing what there is (a 400 for a malformed mix)."""
        if model == self.base:
            return Target(model)
        if "=" in model or "," in model:
            if model.count(",") >= MAX_MIX:
                raise BadRequest(
                    f"the mix {shown(model)} names {model.count(',') + 1} adapters; a mix may name at most {MAX_MIX}",
                    param="model",
                )
            try:
                weights = parse_weights(model, label="model")
            except ToolkitError as err:
                raise BadRequest(message(err), param="model") from None
            for name in weights:
                self._require(name, f"the mix {shown(model)} names adapter {shown(name)}, which is not in the store")
            return Target(describe(weights), tuple(weights.items()), mix=True, template=self._mix_template(weights))
        self._require(model, f"no model named {shown(model)}")
        return Target(model, ((model, 1.0),), template=self._template(model))

    def _template(self, name: str) -> str | None:
        """The template `attach` will record for the adapter: its recipe's, for prompt/completion data."""
        try:
            prompt_format = self.store.prompt_format(name)
        except ToolkitError:  # a damaged recipe: verification refuses the adapter when it is loaded
            return None
        return prompt_format.template if prompt_format is not None else None

    def _mix_template(self, weights: dict[str, float]) -> str | None:
        """A mix is prompted as its adapters are; adapters prompted differently are not mixed (toolkit.mix
        refuses them too: refused here, before the request is queued)."""
        templates = {name: self._template(name) for name in weights}
        unlike = prompted_differently(templates)
        if unlike:
            raise BadRequest(unlike, param="model")
        return next(iter(templates.values()))

    def _require(self, name: str, what: str) -> None:
        if is_valid_name(name) and self.store.exists(name):
            return
        names = [self.base, *self.names()]
        known = ", ".join(names[:SHOWN_NAMES]) + (
            f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else ""
        )
        raise ModelNotFound(f"{what}; this server has: {known} (GET /v1/models lists them)", param="model")


def choose_base(store: AdapterStore, base: str | None, preload: tuple[str, ...] = ()) -> BaseRecord:
    """The base to serve: the one given, else the one the preloaded adapters record, else the one most of
    the store's adapters record; at the revision those adapters record (a pinned hub revision is kept).
    `store.base_for` decides, as it does for every command that loads adapters; only manifests count, since
    the server refuses an adapter that has none."""
    candidates = list(preload) or [n for n in store.names() if store.refusal(n) is None]
    chosen = store.base_for(candidates, base, manifest_only=True)
    if chosen is None:
        raise ToolkitError(
            f"nothing to serve: the store {store.root} holds no adapter that records its base; "
            f"train one into it, point {store.setting} at another store, or name the model with {param('base')}"
        )
    return chosen


def _field_problem(err: ValueError) -> str:
    """One line for what is wrong: pydantic's first error, named by the field of the records it came from."""
    errors = getattr(err, "errors", None)
    if errors is None:
        return str(err)
    first = errors()[0]
    field = {"root": "base", "parent": "base"}.get(str(first["loc"][0]), str(first["loc"][0]))
    return f"{field} is {shown(str(first.get('input')), 40)}: {first['msg'].lower()}"
