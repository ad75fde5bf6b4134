"""Did the recursive loop help? The loop's forecasts against the same model without the loop.

The loop is everything the platform does round after round: retraining (the champion of the
day, promoted on shadow days), the curriculum's row weights, and the rules in force
(``adjusted_<label>`` of ``rules/rule_impact``). "Without it" is the first round's model kept
as it was: the same architecture, data pipeline and seeds, trained once before the first
round, never retrained, weighted or adjusted. Both forecast every day out of sample (the
first model's cutoff is the first round's start), so a Diebold-Mariano test on the same days
says whether the loop's lower (or higher) loss is significant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from pulse_assets.evaluation.retrodiction import forecast_days
from pulse_assets.metrics.comparison import (
    DayLoss,
    LossComparison,
    compare_metrics,
    per_day_losses,
)
from pulse_assets.metrics.regression import MetricsError
from pulse_assets.training.models import ForecastModule


@dataclass(frozen=True)
class LoopVerdict:
    comparison: LossComparison  # base: the first model kept; candidate: the loop
    loss: DayLoss
    level: float

    @property
    def loop_helped(self) -> bool:
        """Yes only when the loop's loss is lower and a two-sided DM test rejects equality."""
        return self.comparison.difference < 0 and self.comparison.p_value < self.level

    def sentence(self) -> str:
        c = self.comparison
        change = (c.candidate_mean_loss / c.base_mean_loss - 1) if c.base_mean_loss else 0.0
        head = (
            f"the recursive loop (retraining, curriculum, rules) against its first model kept "
            f"as it was, over {c.days} out-of-sample days: mean {self.loss.value} loss "
            f"{abs(change):.1%} {'lower' if change < 0 else 'higher'} (DM p = {c.p_value:.3g})"
        )
        if self.loop_helped:
            return f"{head}. Did the loop help, significantly? Yes."
        if c.difference > 0 and c.p_value < self.level:
            return f"{head}. Did the loop help? No: it did significantly worse."
        return f"{head}. Did the loop help, significantly? No (not at the {self.level:g} level)."


def loop_verdict(
    impact: pl.DataFrame,
    first_model: pl.DataFrame,
    label: str,
    loss: DayLoss = DayLoss.SQUARED,
    level: float = 0.05,
) -> LoopVerdict:
    """``impact``: ``date``, ``adjusted_<label>`` (the loop's forecast) and ``actual_<label>``;
    ``first_model``: ``date`` and ``forecast_<label>`` of the first round's model."""
    actual = f"actual_{label}"
    loop = per_day_losses(impact, f"adjusted_{label}", actual, loss)
    kept = per_day_losses(
        first_model.join(impact.select("date", actual), on="date", how="inner"),
        f"forecast_{label}",
        actual,
        loss,
    )
    comparison = compare_metrics(kept, loop, confidence=1.0 - level)
    return LoopVerdict(comparison, loss, level)


def against_first_model(
    records: pl.DataFrame,
    impact: pl.DataFrame,
    features: pl.DataFrame,
    load: Callable[[str], ForecastModule],
    label: str,
) -> LoopVerdict:
    """The loop's forecasts (``impact``: every round's rule-adjusted champion of the day)
    against the first round's champion (``records``: the models/forecast_model rows) kept as
    it was, forecasting the same days from ``features``."""
    first = records.sort("start").row(0, named=True)
    last_day = impact.get_column("date").max()
    if not isinstance(last_day, date):
        raise MetricsError("the rule-impact rows hold no day: materialize rules/rule_impact first")
    kept = forecast_days(
        load(first["champion"]), features, first["start"], last_day + timedelta(days=1)
    )
    return loop_verdict(impact, kept, label)
