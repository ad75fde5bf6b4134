"""Every metric against a hand computation on four rows."""

import math

import pytest

from pulse_assets.metrics.regression import MetricsError, metrics_with_naive, regression_metrics

ACTUAL = [1.0, 2.0, 0.0, 4.0]
FORECAST = [1.5, 1.0, 0.5, 4.0]  # errors +0.5, -1.0, +0.5, 0
NAIVE = [1.0, 1.0, 2.0, 0.0]  # errors 0, -1, +2, -4


def test_each_metric_by_hand():
    m = regression_metrics(ACTUAL, FORECAST, NAIVE)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 1 + 0.25 + 0) / 4))
    assert m["mae"] == pytest.approx((0.5 + 1 + 0.5 + 0) / 4)
    # mean 1.75; total sum of squares 0.5625+0.0625+3.0625+5.0625 = 8.75; residual 1.5
    assert m["r2"] == pytest.approx(1 - 1.5 / 8.75)
    # zero actual left out: (0.5/1 + 1/2 + 0/4) / 3 * 100
    assert m["mape"] == pytest.approx((0.5 + 0.5 + 0.0) / 3 * 100)
    assert m["mbe"] == pytest.approx((0.5 - 1 + 0.5 + 0) / 4)
    assert m["median_ae"] == pytest.approx(0.5)
    assert m["p90_ae"] == pytest.approx(0.85)  # numpy linear: 0.5 + 0.7 * (1.0 - 0.5)
    naive_rmse = math.sqrt((0 + 1 + 4 + 16) / 4)
    assert m["theil_u2"] == pytest.approx(m["rmse"] / naive_rmse)


def test_naive_scores_itself_at_u2_one_and_reports_say_who_wins():
    both = metrics_with_naive(ACTUAL, FORECAST, NAIVE)
    assert both["naive"]["theil_u2"] == 1.0
    assert both["model"]["rmse"] < both["naive"]["rmse"]


def test_mape_of_all_zero_actuals_is_undefined_not_zero():
    assert math.isnan(regression_metrics([0.0, 0.0], [1.0, 2.0], [0.0, 1.0])["mape"])


def test_bad_inputs_are_named():
    with pytest.raises(MetricsError, match="actual has 2 values but forecast has 3"):
        regression_metrics([1, 2], [1, 2, 3], [1, 2])
    with pytest.raises(MetricsError, match="NaN/inf"):
        regression_metrics([1, float("nan")], [1, 2], [1, 2])
    with pytest.raises(MetricsError, match="no rows"):
        regression_metrics([], [], [])
