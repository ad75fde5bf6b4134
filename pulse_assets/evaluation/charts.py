"""Charts of the walk-forward, as matplotlib PNG files (no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import polars as pl  # noqa: E402

from pulse_assets.evaluation.scoreboard import SHADOW, forecaster_columns  # noqa: E402

ROLLING_DAYS = 63  # about a quarter of trading days
STYLE = {
    "champion": ("#1f77b4", 2.0),
    "naive": ("#7f7f7f", 1.0),
    "trailing_mean": ("#2ca02c", 1.0),
    "ewma": ("#ff7f0e", 1.0),
    "garch": ("#d62728", 1.2),
}


def scoreboard_chart(frame: pl.DataFrame, label: str, path: Path) -> Path:
    """Top: rolling out-of-sample RMSE per forecaster. Bottom: the champion's forecast, the
    best-known baselines and the actual. Written to ``path``; returns it."""
    actual = f"actual_{label}"
    known = frame.drop_nulls(actual).sort("date")
    columns = {n: c for n, c in forecaster_columns(label).items() if n != SHADOW}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    dates = known["date"].to_list()
    for name, column in columns.items():
        squared = ((known[column] - known[actual]) ** 2).to_frame("e")
        rolling = squared.select(
            pl.col("e").rolling_mean(ROLLING_DAYS, min_samples=ROLLING_DAYS // 2).sqrt()
        )["e"]
        color, width = STYLE.get(name, (None, 1.0))
        top.plot(dates, rolling.to_list(), label=name, color=color, linewidth=width)
    top.set_ylabel(f"rolling RMSE ({ROLLING_DAYS} days)")
    top.set_title("Out-of-sample loss per forecaster (lower is better)")
    top.legend(loc="upper left", ncol=3, fontsize=8)
    top.grid(alpha=0.3)
    bottom.plot(dates, known[actual].to_list(), color="#bbbbbb", linewidth=0.6, label="actual")
    for name in ("champion", "garch"):
        color, width = STYLE[name]
        bottom.plot(dates, known[columns[name]].to_list(), color=color, linewidth=width, label=name)
    bottom.set_ylabel(label)
    bottom.set_title("Forecast (champion of the day, GARCH) vs actual")
    bottom.legend(loc="upper left", ncol=3, fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
