"""model_history and summary over a real SQLite metrics store."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from pulse_assets.metrics.history import model_history, summary
from pulse_assets.metrics.regression import MetricsError
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.storage.sql import connect

ROUNDS = [date(2016, 7, 1), date(2016, 8, 1), date(2016, 9, 1)]
RMSE = {  # forecaster -> RMSE per round
    "champion": [0.30, 0.20, 0.25],
    "naive": [0.40, 0.10, 0.50],
    "garch": [0.35, 0.15, 0.20],
}


def record(
    store: MetricsStore, scope: str, start: date, figures: dict[str, float], rows=20
) -> None:
    store.record(
        model_name="pulse_forecast",
        model_version="1",
        scope=scope,
        window=(start, start + timedelta(days=27)),
        label="x",
        metrics={"model": figures, "naive": {name: 0.5 for name in figures}},
        rows=rows,
    )


@pytest.fixture
def store(tmp_path) -> MetricsStore:
    metrics = MetricsStore(connect(f"sqlite:///{tmp_path / 'pulse.db'}"))
    for name, values in RMSE.items():
        for start, value in zip(ROUNDS, values, strict=True):
            qlike = float("nan") if name == "naive" else value * 10
            record(metrics, f"round:{name}", start, {"rmse": value, "qlike": qlike})
    # round 2 evaluated again: the later record is the champion's figure for that round
    record(metrics, "round:champion", ROUNDS[1], {"rmse": 0.12, "qlike": 1.2}, rows=21)
    record(metrics, "cumulative:champion", ROUNDS[2], {"rmse": 0.22, "qlike": 2.2}, rows=60)
    other = MetricsStore(metrics.engine)
    other.record(
        model_name="another_model",
        model_version="1",
        scope="round:champion",
        window=(ROUNDS[0], ROUNDS[0]),
        label="x",
        metrics={"model": {"rmse": 0.01}, "naive": {"rmse": 0.02}},
        rows=5,
    )
    return metrics


def test_history_is_one_row_per_round_with_the_latest_record(store) -> None:
    history = model_history(store, "pulse_forecast", forecaster="champion", metric="rmse")
    assert history.get_column("round").to_list() == ROUNDS
    assert history.get_column("value").to_list() == [0.30, 0.12, 0.25]
    assert history.get_column("days").to_list() == [20, 21, 20]
    assert set(history.get_column("kind")) == {"round"}
    everything = model_history(store, "pulse_forecast")
    assert everything.height == 3 * 3 * 2  # forecasters x rounds x metrics, no duplicate
    naive_qlike = everything.filter(
        (pl.col("forecaster") == "naive") & (pl.col("metric") == "qlike")
    )
    assert naive_qlike.get_column("value").null_count() == 3  # NaN stored as NULL, read as null
    cumulative = model_history(store, "pulse_forecast", kind="cumulative")
    assert cumulative.select("round", "forecaster", "metric", "value").rows() == [
        (ROUNDS[2], "champion", "qlike", 2.2),
        (ROUNDS[2], "champion", "rmse", 0.22),
    ]
    assert model_history(store, "no_such_model").height == 0


def test_summary_over_rounds_by_hand(store) -> None:
    table = summary(store, "pulse_forecast").filter(pl.col("metric") == "rmse")
    assert table.get_column("forecaster").to_list() == ["champion", "garch", "naive"]  # by mean
    champion = table.row(0, named=True)
    assert champion["rounds"] == 3
    assert champion["mean"] == pytest.approx((0.30 + 0.12 + 0.25) / 3, rel=1e-12)
    assert (champion["last"], champion["last_round"]) == (0.25, ROUNDS[2])
    assert (champion["best"], champion["best_round"]) == (0.12, ROUNDS[1])
    assert (champion["worst"], champion["worst_round"]) == (0.30, ROUNDS[0])
    assert champion["cumulative"] == 0.22
    # lowest RMSE per round: champion (0.30 < 0.35 < 0.40), naive (0.10), garch (0.20)
    won = dict(zip(table["forecaster"], table["rounds_won"], strict=True))
    assert won == {"champion": 1, "naive": 1, "garch": 1}
    garch = table.row(1, named=True)
    assert garch["cumulative"] is None  # not recorded for garch
    qlike = summary(store, "pulse_forecast", metrics=["qlike"])
    assert qlike.filter(pl.col("forecaster") == "naive").height == 0  # undefined every round


def test_summary_ranks_loss_metrics_only(store) -> None:
    with pytest.raises(MetricsError, match="lower-is-better"):
        summary(store, "pulse_forecast", metrics=["trust_delta"])
    assert summary(store, "no_such_model").height == 0
