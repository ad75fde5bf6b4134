"""One exception hierarchy: every message says what failed, where, and what to do."""

from __future__ import annotations


class PulseError(Exception):
    """Root of every error Pulse Assets raises on purpose."""


class ConfigError(PulseError):
    """A configuration file is missing, malformed or names something unknown."""


class SourceError(PulseError):
    """A source could not be read: nothing is stored for the partitions it was asked for."""

    def __init__(self, source: str, location: str, problem: str, hint: str) -> None:
        self.source = source
        self.location = location
        self.problem = problem
        super().__init__(f"source {source!r} at {location}: {problem}. {hint}")


class SchemaError(PulseError):
    """Data lacks a column the schema requires, so no row of it can be validated."""


class QuarantineError(PulseError):
    """Too many rows of a source were quarantined: the run stored none of its rows."""


class StoreError(PulseError):
    """The partition store could not read or write a partition."""


class FeatureError(PulseError):
    """The feature pipeline was given inputs it cannot turn into features."""


class NoChampionError(PulseError):
    """An asset needs the champion model and the registry has none yet."""


class TrainingDivergedError(PulseError):
    """Training loss stayed non-finite after every configured recovery: the model diverged.

    Its own class so that failure handling tells divergence (keep the champion) from other
    training failures (a missing device, too few rows) by type, not by message."""
