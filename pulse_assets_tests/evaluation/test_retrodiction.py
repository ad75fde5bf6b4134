"""Retrodiction reads only what was known on each day."""

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pulse_assets.evaluation.retrodiction import retrodict, window_metrics
from pulse_assets.storage import PartitionStore
from pulse_assets.training.checkpoints import CheckpointStore
from pulse_assets.training.trainer import train
from pulse_assets_tests.training.train_worker import load_data


def test_forecasts_up_to_t_ignore_features_after_t_and_naive_is_the_previous_label(
    trained_world, tmp_path: Path
):
    settings = trained_world["settings"]
    fit, valid = load_data(settings)
    module = train(fit, valid, settings.training, CheckpointStore(tmp_path, "r")).module
    store = PartitionStore(settings.store.root)
    features = store.read_range("features/daily_features", "2016-09-01", "2016-12-31")
    labels = store.read_range("features/daily_labels", "2016-09-01", "2016-12-31")
    names, label_names = list(module.feature_names), ["sp500_abs_return_next"]
    start, end, t = date(2016, 10, 1), date(2017, 1, 1), date(2016, 11, 15)

    frame = retrodict(
        module, features, labels, names, label_names, start, end, "7", date(2016, 10, 31)
    )
    tampered = features.with_columns(
        pl.when(pl.col("date") > t).then(pl.col(c) * 10 + 3).otherwise(pl.col(c)).alias(c)
        for c in names
    )
    again = retrodict(
        module, tampered, labels, names, label_names, start, end, "7", date(2016, 10, 31)
    )
    upto = pl.col("date") <= t
    assert frame.filter(upto)["forecast_sp500_abs_return_next"].equals(
        again.filter(upto)["forecast_sp500_abs_return_next"]
    )
    assert not frame.filter(~upto)["forecast_sp500_abs_return_next"].equals(
        again.filter(~upto)["forecast_sp500_abs_return_next"]
    )

    rows = frame.sort("date")
    known = labels.sort("date").filter(pl.col("date") >= start - timedelta(days=10))
    previous = dict(
        zip(
            known["date"].to_list()[1:],
            known["label_sp500_abs_return_next"].to_list()[:-1],
            strict=True,
        )
    )
    for row in rows.head(5).iter_rows(named=True):
        assert row["naive_sp500_abs_return_next"] == previous[row["date"]]
        assert (
            row["error_sp500_abs_return_next"]
            == row["forecast_sp500_abs_return_next"] - row["actual_sp500_abs_return_next"]
        )
    assert rows.filter(pl.col("date") <= date(2016, 10, 31))["in_sample"].all()
    assert not rows.filter(pl.col("date") > date(2016, 10, 31))["in_sample"].any()
    scores = window_metrics(frame, label_names)["sp500_abs_return_next"]
    assert np.isfinite(scores["model"]["rmse"]) and scores["naive"]["theil_u2"] == 1.0
