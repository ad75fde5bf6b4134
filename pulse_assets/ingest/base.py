"""The source plugin contract and the loader that builds a plugin from ``module:Class``."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from datetime import date
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from pulse_assets.errors import ConfigError


class SourceParams(BaseModel):
    """Base of every plugin's params: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(ABC):
    """A raw data source. ``fetch`` returns one row per (entity, date) with ``date`` in [start, end).

    Rows carry a ``date`` (pl.Date) and an ``entity`` (pl.String) column plus the source's value
    columns, still untyped where the source is: the schema check types and validates them.
    A source that cannot be read raises :class:`~pulse_assets.errors.SourceError`.
    """

    Params: ClassVar[type[SourceParams]] = SourceParams

    def __init__(self, name: str, params: SourceParams) -> None:
        self.name = name
        self.params = params

    @abstractmethod
    def fetch(self, start: date, end: date) -> pl.DataFrame:
        """Rows observed on days ``start <= date < end``."""

    @abstractmethod
    def location(self) -> str:
        """Where the data comes from, for error messages and metadata."""


def load_source(name: str, plugin: str, params: dict[str, Any]) -> Source:
    """Build the plugin ``module.path:ClassName`` for source ``name`` with validated params."""
    module_name, _, class_name = plugin.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"source {name!r}: cannot import plugin module {module_name!r}: {error}"
        ) from error
    source_class = getattr(module, class_name, None)
    if source_class is None:
        raise ConfigError(
            f"source {name!r}: module {module_name!r} has no class {class_name!r}; "
            "check the plugin's spelling (module.path:ClassName)"
        )
    if not (isinstance(source_class, type) and issubclass(source_class, Source)):
        raise ConfigError(
            f"source {name!r}: {plugin!r} is not a Source subclass; "
            "name a class from pulse_assets.ingest or your own Source plugin"
        )
    try:
        typed_params = source_class.Params.model_validate(params)
    except ValidationError as error:
        problems = "; ".join(
            f"params.{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors()
        )
        raise ConfigError(f"source {name!r}: invalid params for {plugin}: {problems}") from error
    return source_class(name, typed_params)
