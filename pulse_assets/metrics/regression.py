"""Point-forecast metrics, each defined so that it can be checked by hand.

``theil_u2`` is the ratio of the forecast's RMSE to the RMSE of the naive persistence
forecast (tomorrow equals today) over the same rows: below 1 the model beats naive.
``mape`` is in percent over the rows whose actual value is not zero; with no such row it
is NaN (undefined), never a made-up number.
"""

from __future__ import annotations

import numpy as np

from pulse_assets.errors import PulseError

METRIC_NAMES = ("rmse", "mae", "r2", "mape", "mbe", "median_ae", "p90_ae", "theil_u2")


class MetricsError(PulseError):
    """Inputs that no metric can be computed from."""


def _as_arrays(actual, forecast) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(actual, dtype=np.float64).ravel()
    f = np.asarray(forecast, dtype=np.float64).ravel()
    if y.shape != f.shape:
        raise MetricsError(f"actual has {y.size} values but forecast has {f.size}")
    if y.size == 0:
        raise MetricsError("no rows to compute metrics on")
    if not (np.isfinite(y).all() and np.isfinite(f).all()):
        raise MetricsError("actual or forecast holds NaN/inf; drop unknown labels first")
    return y, f


def regression_metrics(actual, forecast, naive) -> dict[str, float]:
    """All metrics of ``forecast`` against ``actual``; ``naive`` is the persistence forecast."""
    y, f = _as_arrays(actual, forecast)
    _, n = _as_arrays(actual, naive)
    errors = f - y
    absolute = np.abs(errors)
    total = float(((y - y.mean()) ** 2).sum())
    nonzero = y != 0
    naive_rmse = float(np.sqrt(((n - y) ** 2).mean()))
    rmse = float(np.sqrt((errors**2).mean()))
    return {
        "rmse": rmse,
        "mae": float(absolute.mean()),
        "r2": 1.0 - float((errors**2).sum()) / total if total > 0 else float("nan"),
        "mape": float((absolute[nonzero] / np.abs(y[nonzero])).mean() * 100)
        if nonzero.any()
        else float("nan"),
        "mbe": float(errors.mean()),
        "median_ae": float(np.median(absolute)),
        "p90_ae": float(np.quantile(absolute, 0.9)),
        "theil_u2": rmse / naive_rmse if naive_rmse > 0 else float("nan"),
    }


def metrics_with_naive(actual, forecast, naive) -> dict[str, dict[str, float]]:
    """The model's metrics and the naive forecast's, so a report says whether it beats naive."""
    return {
        "model": regression_metrics(actual, forecast, naive),
        "naive": regression_metrics(actual, naive, naive),
    }
