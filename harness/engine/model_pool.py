"""The models of a run or sweep, each loaded once and shared by every method and role that names it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from harness.engine.batch_invariance import set_batch_invariant
from harness.engine.lockstep import check_vocabularies
from harness.engine.models import LoadedModel, load_model
from harness.engine.prefix_cache import PrefixCache


@dataclass
class ModelPool:
    """Loaded models by name (as `--model` takes it), loading each on first use.

    Args:
        dtype, device: how models not given already are loaded.
        loaded: models already loaded, by name (never loaded again).
        on_load: called with (name, model, seconds) after a model loads; `warm_up` runs first.
        prefix_cache: shared by every model of the pool (each model is served only its own
            entries), so one method's decoded prompts start the next one's; None: off.
    """

    dtype: str = "auto"
    device: str = "cpu"
    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    on_load: Callable[[str, LoadedModel, float], None] | None = None
    warm_up: Callable[[LoadedModel], None] | None = None
    prefix_cache: PrefixCache | None = field(default_factory=PrefixCache)
    # Every model handed out computes in this mode (see harness.engine.batch_invariance),
    # models given already loaded included.
    batch_invariant: bool = True

    def get(self, name: str) -> LoadedModel:
        if name in self.loaded:
            self._prepare(self.loaded[name])
        else:
            began = time.perf_counter()
            model = load_model(name, dtype=self.dtype, device=self.device, batch_invariant=self.batch_invariant)
            self._prepare(model)
            if self.warm_up is not None:
                self.warm_up(model)
            self.loaded[name] = model
            if self.on_load is not None:
                self.on_load(name, model, time.perf_counter() - began)
        return self.loaded[name]

    def _prepare(self, model: LoadedModel) -> None:
        if model.prefix_cache is None:
            model.prefix_cache = self.prefix_cache
        if model.batch_invariant != self.batch_invariant:
            model.batch_invariant = set_batch_invariant(model.model, self.batch_invariant)

    def by_role(self, names: Mapping[str, str]) -> dict[str, LoadedModel]:
        """{role: model} for {role: model name}, refusing models whose vocabularies differ
        (their streams could not be mixed) before any decoding."""
        models = {role: self.get(name) for role, name in names.items()}
        check_vocabularies(list(models.values()), [f"the {role} model {name!r}" for role, name in names.items()])
        return models
