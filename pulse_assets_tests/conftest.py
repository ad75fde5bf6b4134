"""Shared fixtures: a throwaway PULSE_HOME, settings built from the real config, real data."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from datetime import date, timedelta
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
        raw["rounds"] = copy.deepcopy(SMALL_ROUNDS)
        raw["curriculum"] = copy.deepcopy(SMALL_CURRICULUM)
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


SMALL_TRAINING: dict[str, Any] = {
    "labels": ["sp500_abs_return_next"],
    "window_days": 300,
    "min_rows": 60,
    "model": {"kind": "gru", "hidden_sizes": [8], "dropout": 0.0, "lookback_rows": 5},
    "optimizer": {"batch_size": 32, "learning_rate": 0.003, "epochs": 6, "patience": 3, "seed": 3},
}
SMALL_ROUNDS: dict[str, Any] = {
    "cadence": "monthly",
    "start": "2016-07-01",
    "warm_start": True,
    "warm_start_epochs": 3,
    "min_shadow_days": 5,
}
SMALL_DRIFT: dict[str, Any] = {
    "window_days": 20,
    "persistence": 2,
    "multivariate": {"subsample": 60, "n_permutations": 20},
}


# The default curriculum's regime columns come from the full feature steps; these are the
# small steps' columns.
SMALL_CURRICULUM: dict[str, Any] = {
    "regimes": {
        "volatility": {"column": "sp500_log_return_rolling_volatility_10", "stat": "mean"},
        "volatility_change": {"column": "sp500_log_return_rolling_volatility_10", "stat": "change"},
        "poll_margin_move": {"column": "polls_margin_change_3", "stat": "mean_abs"},
        "tweet_activity": {"column": "tweets_tweet_count_rolling_zscore_10", "stat": "mean"},
        "drawdown": {"column": "sp500_close_ma_gap_10", "stat": "min"},
    },
    "min_error_days": 20,
    "history_rounds": 12,
}


def small_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    """The real config with small windows and every store under ``tmp``."""
    raw = copy.deepcopy(default_config())
    raw["partitions"] = {"start": "2015-01-01", "end": "2017-01-01", "timezone": "UTC"}
    raw["store"] = {"root": str(tmp / "store")}
    raw["sql"] = {"url": f"sqlite:///{tmp / 'pulse.db'}"}
    raw["features"]["steps"] = copy.deepcopy(SMALL_FEATURE_STEPS)
    raw["training"] = copy.deepcopy(SMALL_TRAINING) | {
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "retries": 0}
    }
    raw["drift"] = copy.deepcopy(SMALL_DRIFT)
    raw["rounds"] = copy.deepcopy(SMALL_ROUNDS)
    raw["curriculum"] = copy.deepcopy(SMALL_CURRICULUM)
    raw.update(overrides)
    return raw


def populate_store(settings: Settings, first: date, last: date) -> None:
    """Raw, features and labels partitions for every day of [first, last] written by the domain
    code directly (what the Dagster assets write: warm-up days of features are empty files), so
    training tests need not replay ingestion."""
    from pulse_assets.features import build_daily_features, build_labels
    from pulse_assets.storage import PartitionStore

    store = PartitionStore(settings.store.root)
    keys = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    end = last + timedelta(days=1)
    frames = {}
    for name, source in settings.sources.items():
        plugin = load_source(name, source.plugin, source.params)
        frames[name] = ingest_window(plugin, source.data_schema, first, end).good
        store.write_partitions(f"raw/{name}", frames[name], keys)
    feature_start = first + timedelta(days=settings.features.lookback_days())
    table = build_daily_features(frames, settings.features, feature_start, end).frame
    store.write_partitions("features/daily_features", table, keys)
    labels = build_labels(frames, settings.features.labels, settings.features.spine, first, end)
    store.write_partitions("features/daily_labels", labels, keys)


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A PULSE_HOME-like folder with 2015-2016 data in the store (features from mid-March 2015)."""
    tmp = tmp_path_factory.mktemp("world")
    raw = small_config(tmp)
    settings = Settings.model_validate(raw)
    populate_store(settings, date(2015, 1, 1), date(2016, 12, 31))
    return {"tmp": tmp, "raw": raw, "settings": settings}


def isolated_world(world: dict[str, Any], tmp: Path, **training: Any) -> Settings:
    """Settings over a copy of ``world``'s store with their own SQL store and MLflow under
    ``tmp``; ``training`` overrides keys of the training section."""
    shutil.copytree(world["settings"].store.root, tmp / "store")
    raw = world["raw"] | {
        "store": {"root": str(tmp / "store")},
        "sql": {"url": f"sqlite:///{tmp / 'pulse.db'}"},
    }
    tracking = {"tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}", "retries": 0}}
    raw["training"] = raw["training"] | training | tracking
    return Settings.model_validate(raw)


def train_champion(settings: Settings, checkpoints_root: Path) -> None:
    """The first round straight through the domain code: its version becomes champion (and
    challenger) from the round's start on."""
    from pulse_assets.definitions import build_resources
    from pulse_assets.defs.partitions import round_partitions
    from pulse_assets.training.rounds import RoundContext, RoundWindow, run_round
    from pulse_assets.training.service import ModelCache

    resources = build_resources(settings)
    registry = resources["registry"].get()
    store = resources["partition_store"].get()
    rounds = round_partitions(settings)
    key = rounds.get_first_partition_key()
    span = rounds.time_window_for_partition_key(key)
    window = RoundWindow(key, span.start.date(), span.end.date())
    last = (window.end - timedelta(days=1)).isoformat()
    features = store.read_range("features/daily_features", "0000-00-00", last)
    labels = store.read_range("features/daily_labels", "0000-00-00", last)
    context = RoundContext(
        training=settings.training,
        rounds=settings.rounds,
        registry=registry,
        checkpoints_root=checkpoints_root,
        load=ModelCache(registry).load,
        trigger="manual",
        run_id=None,
    )
    run_round(context, window, None, features, labels, window.start)
