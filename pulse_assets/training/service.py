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
        self._twins: dict[str, ForecastModule] = {}

    def load(self, version: str) -> ForecastModule:
        if version not in self._modules:
            self._modules[version] = self._registry.load(version)
        return self._modules[version]

    def load_uniform_twin(self, version: str) -> ForecastModule:
        if version not in self._twins:
            self._twins[version] = self._registry.load_uniform_twin(version)
        return self._twins[version]

    def add(self, version: str, module: ForecastModule) -> None:
        self._modules[version] = module


class ServiceLookup:
    """Which version forecast day t, from the alias audit read once per run."""

    def __init__(self, registry: ModelRegistry, cache: ModelCache) -> None:
        self._registry = registry
        self._cache = cache
        self._history: list[AliasEvent] = registry.audit.history(registry.model_name)
        self._tags: dict[str, VersionTags] = {}

    def _tags_of(self, version: str) -> VersionTags:
        if version not in self._tags:
            self._tags[version] = VersionTags.of(self._registry.version(version))
        return self._tags[version]

    def _forecaster(self, version: str | None) -> Forecaster | None:
        if version is None:
            return None
        return Forecaster(version, self._cache.load(version), self._tags_of(version).cutoff)

    def champion(self, day: date) -> Forecaster | None:
        return self._forecaster(holder_at(self._history, CHAMPION, day))

    def challenger(self, day: date) -> Forecaster | None:
        """The shadow of day t: the challenger in service, when it is not the champion."""
        version = holder_at(self._history, CHALLENGER, day)
        champion = holder_at(self._history, CHAMPION, day)
        return None if version == champion else self._forecaster(version)

    def uniform_twin(self, day: date) -> Forecaster | None:
        """The challenger in service on day t as it would be without its curriculum: its
        uniform-weight twin, or itself when it trained with uniform weights; None when it was
        weighted and no twin was kept (``curriculum.uniform_twin: false``)."""
        version = holder_at(self._history, CHALLENGER, day)
        if version is None:
            return None
        tags = self._tags_of(version)
        if not tags.curriculum_weighted:
            return self._forecaster(version)
        if not tags.uniform_twin:
            return None
        return Forecaster(version, self._cache.load_uniform_twin(version), tags.cutoff)
