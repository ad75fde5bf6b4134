"""Which model versions were in service, and each loaded once: what a run over many rounds
needs from the registry, without asking it twice."""

from __future__ import annotations

from datetime import date

from pulse_assets.evaluation.retrodiction import Forecaster
from pulse_assets.training.audit import AliasEvent, holder_at
from pulse_assets.training.models import ForecastModule
from pulse_assets.training.registry import CHALLENGER, CHAMPION, ModelRegistry, VersionTags


class ModelCache:
    """Each version loaded from the registry once per run; trained ones added as they come."""

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._modules: dict[str, ForecastModule] = {}

    def load(self, version: str) -> ForecastModule:
        if version not in self._modules:
            self._modules[version] = self._registry.load(version)
        return self._modules[version]

    def add(self, version: str, module: ForecastModule) -> None:
        self._modules[version] = module


class ServiceLookup:
    """Which version forecast day t, from the alias audit read once per run."""

    def __init__(self, registry: ModelRegistry, cache: ModelCache) -> None:
        self._registry = registry
        self._cache = cache
        self._history: list[AliasEvent] = registry.audit.history(registry.model_name)
        self._cutoffs: dict[str, date] = {}

    def _forecaster(self, version: str | None) -> Forecaster | None:
        if version is None:
            return None
        if version not in self._cutoffs:
            self._cutoffs[version] = VersionTags.of(self._registry.version(version)).cutoff
        return Forecaster(version, self._cache.load(version), self._cutoffs[version])

    def champion(self, day: date) -> Forecaster | None:
        return self._forecaster(holder_at(self._history, CHAMPION, day))

    def challenger(self, day: date) -> Forecaster | None:
        """The shadow of day t: the challenger in service, when it is not the champion."""
        version = holder_at(self._history, CHALLENGER, day)
        champion = holder_at(self._history, CHAMPION, day)
        return None if version == champion else self._forecaster(version)
