"""Forecast metrics (the plan's _calculate_basic_metrics) and their SQL store."""

from pulse_assets.metrics.regression import METRIC_NAMES, regression_metrics

__all__ = ["METRIC_NAMES", "regression_metrics"]
