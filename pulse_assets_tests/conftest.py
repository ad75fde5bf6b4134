"""Shared fixtures: a throwaway PULSE_HOME, settings built from the real config, real data."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from pulse_assets.config import DEFAULT_CONFIG_PATH, Settings
from pulse_assets.ingest import ingest_window, load_source

# Windows small enough for fast tests; the pipeline's shape is the default's.
SMALL_FEATURE_STEPS: list[dict[str, Any]] = [
    {"type": "fillna", "params": {"fill_value": 0.0, "staleness_cap_days": 60}},
    {
        "type": "calculate_indicators",
        "params": {
            "indicators": [
                {"kind": "log_return", "column": "sp500_close", "name": "sp500_log_return"},
                {"kind": "rolling_volatility", "column": "sp500_log_return", "windows": [5, 10]},
                {"kind": "momentum", "column": "sp500_close", "windows": [5]},
                {"kind": "rsi", "column": "sp500_close", "windows": [7]},
                {"kind": "ma_gap", "column": "sp500_close", "windows": [10]},
                {"kind": "change", "column": "polls_margin", "windows": [3]},
                {"kind": "rolling_zscore", "column": "tweets_tweet_count", "windows": [10]},
            ]
        },
    },
    {
        "type": "normalize",
        "params": {
            "method": "z-score",
            "window": 20,
            "columns": ["sp500_log_return", "sp500_close_momentum_5"],
        },
    },
]


def default_config() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


@pytest.fixture
def pulse_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "pulse_home"
    monkeypatch.setenv("PULSE_HOME", str(home))
    return home


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from the real config with small windows and a temporary store; overrides win."""

    def build(**overrides: Any) -> Settings:
        raw = copy.deepcopy(default_config())
        raw["partitions"] = {"start": "2015-01-01", "end": "2017-01-01", "timezone": "UTC"}
        raw["store"] = {"root": str(tmp_path / "store")}
        raw["features"]["steps"] = copy.deepcopy(SMALL_FEATURE_STEPS)
        for key, value in overrides.items():
            raw[key] = value
        return Settings.model_validate(raw)

    return build


@pytest.fixture(scope="session")
def real_raw_frames() -> dict[str, pl.DataFrame]:
    """Validated rows of the three embedded sources for 2014-2017 (real data)."""
    raw = default_config()
    settings = Settings.model_validate(raw)
    frames = {}
    for name, source in settings.sources.items():
        plugin = load_source(name, source.plugin, source.params)
        frames[name] = ingest_window(
            plugin, source.data_schema, date(2014, 1, 1), date(2018, 1, 1)
        ).good
    return frames


@pytest.fixture
def small_settings(make_settings: Callable[..., Settings]) -> Iterator[Settings]:
    yield make_settings()
