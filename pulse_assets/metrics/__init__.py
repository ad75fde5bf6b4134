"""Forecast metrics (the plan's _calculate_basic_metrics) and their SQL store.

The metrics layer lives in submodules, imported from there (``evaluation`` imports this
package, so it re-exports none of them): ``history`` (model_history, summary over the store),
``comparison`` (compare_metrics), ``recursive`` (symbolic alignment, trust delta) and
``rounds`` (a round's metrics, what ``metrics/model_metrics`` computes).
"""

from pulse_assets.metrics.regression import METRIC_NAMES, regression_metrics

__all__ = ["METRIC_NAMES", "regression_metrics"]
