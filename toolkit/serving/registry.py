"""Which adapters are loaded on the one base: loaded and verified on first use, at most `max_loaded` kept
(least recently used unloaded first), a retrained adapter served at its new version from the next
request on, a removed one unloaded. Mixes are built once (with `toolkit.mix`) and kept like adapters.

Only the batcher's worker thread calls a Registry: loading and unloading change the model's layers, which
must never happen during a forward pass.

Each load gets its own peft name, "poems@3": when an adapter is retrained while rows still generate with
it, the old version stays loaded under its name until they end, and the new one serves the next request.

Every row names its own adapter (peft's `adapter_names`), so which adapter peft calls "active" means nothing
to the server; but peft's forward still looks up the active adapter's config, and neither `load_adapter`
nor `delete_adapter` of the last one keeps that name pointing at an adapter that exists. After every change
the registry points it at one that is loaded (`_settle`), so that loading, unloading and replacing leave a
model that runs, in any order.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolkitError
from ..modeling.mixing import mix
from ..modeling.prompting import prompt_template
from ..modeling.switching import BASE, loaded_adapters
from ..records import ModelSource
from ..store.loading import WEIGHTS, attach, check_adapters
from ..store.manifest import MANIFEST
from ..store.store import AdapterStore
from .catalog import Target
from .errors import AdapterRefused, ModelNotFound, message

log = logging.getLogger(__name__)

Version = tuple  # what changes when an adapter is retrained, imported again or edited: see version()


class NoRoom(Exception):
    """Loading now would exceed max_loaded and every loaded adapter is generating: wait for a row to end."""


@dataclass
class LoadedAdapter:
    peft_name: str  # the name peft knows it by: "poems@3", or "mix-<hash>"
    adapters: tuple[str, ...]  # the store's adapters it was made of
    versions: tuple[Version, ...]  # of those adapters when it was loaded
    users: int = 0  # rows generating with it now


class Registry:
    def __init__(
        self, model, tokenizer, store: AdapterStore, source: ModelSource, max_loaded: int, strict: bool = True
    ):
        self.model, self.tokenizer, self.store, self.source = model, tokenizer, store, source
        self.max_loaded, self.strict = max_loaded, strict
        self.current: OrderedDict[str, LoadedAdapter] = OrderedDict()  # target name -> entry; least recently used first
        self.retired: list[LoadedAdapter] = []  # older versions still generating; unloaded when their last row ends
        self._loads = itertools.count(1)

    @property
    def loaded(self) -> int:
        return len(self.current) + len(self.retired)

    def acquire(self, target: Target) -> str:
        """The peft name to generate `target` with (BASE for the base), loaded if need be, and held until
        release(). Raises ModelNotFound, AdapterRefused, or NoRoom (try again when a row ends)."""
        if not target.weights:
            return BASE
        versions = tuple(self._version(name) for name in target.adapters)
        entry = self.current.get(target.name)
        if entry is not None and entry.versions != versions:
            log.info("%s changed in the store: loading its new version", target.name)
            self._retire(target.name)
            entry = None
        if entry is None:
            entry = self._mix(target, versions) if target.mix else self._load(target.name, versions)
            self.current[target.name] = entry
        self.current.move_to_end(target.name)
        entry.users += 1
        self._trim()
        return entry.peft_name

    def template(self, peft_name: str) -> str | None:
        """The prompt template recorded when `peft_name` was loaded (None: the base, a text adapter)."""
        return prompt_template(self.model, peft_name)

    def release(self, peft_name: str) -> None:
        """A row that used `peft_name` ended."""
        if peft_name == BASE:
            return
        for entry in [*self.current.values(), *self.retired]:
            if entry.peft_name == peft_name:
                entry.users -= 1
        for entry in [e for e in self.retired if e.users == 0]:
            self.retired.remove(entry)
            self._unload(entry)
        self._trim()

    def sweep(self) -> None:
        """Unload what is idle and no longer in the store as it was loaded (removed, retrained, edited)."""
        for name, entry in list(self.current.items()):
            if entry.users == 0 and not self._up_to_date(entry):
                del self.current[name]
                self._unload(entry)

    # ---------------------------------------------------------------- loading and unloading

    def _load(self, name: str, versions: tuple[Version, ...]) -> LoadedAdapter:
        self._make_room(1)
        peft_name = f"{name}@{next(self._loads)}"
        try:
            check_adapters(self.store, [name], self.source, self.tokenizer, self.strict)
            self.model = attach(self.model, self.store, name, adapter_name=peft_name)
        except ToolkitError as err:
            self._settle()
            if not self.store.exists(name):  # removed between the request and now
                raise ModelNotFound(f"adapter {name!r} was removed from the store", param="model") from None
            raise AdapterRefused(message(err), param="model") from None
        self._settle()
        log.info("loaded adapter %s (%s)", name, peft_name)
        return LoadedAdapter(peft_name, (name,), versions)

    def _mix(self, target: Target, versions: tuple[Version, ...]) -> LoadedAdapter:
        """Build the mix from its adapters, loaded (and held) for the time it takes."""
        parts = [Target(name, ((name, 1.0),)) for name in target.adapters]
        self._make_room(1 + sum(part.name not in self.current for part in parts))
        held = []
        try:
            for part in parts:
                held.append(self.acquire(part))
            weights = {peft: weight for peft, (_, weight) in zip(held, target.weights)}
            peft_name = mix(self.model, weights)
            self._settle()
        finally:
            for peft in held:
                self.release(peft)
        log.info("built mix %s (%s)", target.name, peft_name)
        return LoadedAdapter(peft_name, target.adapters, versions)

    def _make_room(self, needed: int) -> None:
        """Unload the least recently used idle entries until `needed` more fit; NoRoom when the rest are
        generating. A request that alone needs more than max_loaded (a large mix) is let through."""
        while self.loaded + needed > self.max_loaded:
            idle = next((name for name, e in self.current.items() if e.users == 0), None)
            if idle is None:
                if self.loaded == 0:  # nothing left to unload: this request alone needs more
                    return
                raise NoRoom()
            self._unload(self.current.pop(idle))

    def _trim(self) -> None:
        while self.loaded > self.max_loaded:
            idle = next((name for name, e in self.current.items() if e.users == 0), None)
            if idle is None:
                return
            self._unload(self.current.pop(idle))

    def _retire(self, name: str) -> None:
        entry = self.current.pop(name)
        if entry.users:
            self.retired.append(entry)
        else:
            self._unload(entry)

    def _unload(self, entry: LoadedAdapter) -> None:
        with warnings.catch_warnings():  # peft warns when the "active" adapter goes; rows name theirs
            warnings.simplefilter("ignore")
            self.model.delete_adapter(entry.peft_name)
        self._settle()
        log.info("unloaded %s", entry.peft_name)

    def _settle(self) -> None:
        """Point peft's "active" adapter at one that is loaded (see the module's docstring). With none
        loaded the engine runs the base model itself, and the name is set again at the next load."""
        loaded = loaded_adapters(self.model)
        if loaded and self.model.active_adapter not in loaded:
            self.model.set_adapter(loaded[-1], inference_mode=True)

    # ---------------------------------------------------------------- versions

    def _version(self, name: str) -> Version:
        folder = self.store.path(name)
        version = tuple(_stat(path) for path in (folder, folder / MANIFEST, folder / WEIGHTS))
        if version[0] is None or not self.store.exists(name):
            raise ModelNotFound(f"adapter {name!r} was removed from the store", param="model")
        return version

    def _up_to_date(self, entry: LoadedAdapter) -> bool:
        try:
            return tuple(self._version(a) for a in entry.adapters) == entry.versions
        except ModelNotFound:
            return False


def _stat(path: Path) -> tuple | None:
    """A store folder is replaced by a rename and its files are never written in place by the toolkit: a
    new inode, size or modification time means another version."""
    try:
        s = path.stat()
    except FileNotFoundError:
        return None
    return (s.st_ino, s.st_size, s.st_mtime_ns)
