"""What active rules did to the champion's forecast, after they were activated (PNG, Agg).

Input (the rule-impact frame): ``date, round, active_rule_ids`` (comma-separated ids of the
rules active that day, "" when none), ``rules_fired`` (how many of them fired that day),
``forecast_<label>`` (the champion's forecast before the rules), ``adjusted_<label>`` (after)
and ``actual_<label>``. A day's gain is the unadjusted squared error minus the adjusted one:
above 0 the rules brought the forecast closer to what happened. Only days with a known actual
count, from the first day any rule was active (the whole span when none ever was).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from pulse_assets.evaluation.charts import (  # noqa: E402
    WIDTH,
    date_axis,
    require_columns,
    require_rows,
    save_figure,
)

HELPED, HURT = "#2ca02c", "#d62728"


def _columns(label: str) -> list[str]:
    return [
        "date",
        "round",
        "active_rule_ids",
        "rules_fired",
        f"forecast_{label}",
        f"adjusted_{label}",
        f"actual_{label}",
    ]


def rule_gain(impact: pl.DataFrame, label: str) -> pl.DataFrame:
    """``date, round, active_rule_ids, rules_fired, gain, cumulative_gain`` by date, from the
    first day a rule was active: gain = (forecast - actual)² - (adjusted - actual)²."""
    require_columns(impact, _columns(label), "rule impact")
    known = impact.drop_nulls([f"actual_{label}", f"forecast_{label}", f"adjusted_{label}"])
    require_rows(known, f"day with the actual, forecast and adjusted {label} known")
    known = known.sort("date").with_columns(pl.col("active_rule_ids").fill_null(""))
    active = known.filter(pl.col("active_rule_ids") != "")
    if active.height:
        known = known.filter(pl.col("date") >= active["date"].min())
    actual = pl.col(f"actual_{label}")
    gain = (pl.col(f"forecast_{label}") - actual) ** 2 - (pl.col(f"adjusted_{label}") - actual) ** 2
    return known.select(
        "date",
        "round",
        "active_rule_ids",
        pl.col("rules_fired").cast(pl.Int64),
        gain.alias("gain"),
        gain.cum_sum().alias("cumulative_gain"),
    )


def round_rmse_change(impact: pl.DataFrame, label: str) -> pl.DataFrame:
    """``round, start, rmse_forecast, rmse_adjusted, rmse_reduction, fired, days`` per round
    from the first activation; ``rmse_reduction`` = RMSE before rules - after (> 0 helped)."""
    gains = rule_gain(impact, label).select("date", "round", "rules_fired")
    actual = pl.col(f"actual_{label}")
    rows = impact.join(gains.select("date"), on="date", how="semi")
    return (
        rows.group_by("round")
        .agg(
            pl.col("date").min().alias("start"),
            ((pl.col(f"forecast_{label}") - actual) ** 2).mean().sqrt().alias("rmse_forecast"),
            ((pl.col(f"adjusted_{label}") - actual) ** 2).mean().sqrt().alias("rmse_adjusted"),
            pl.col("rules_fired").sum().cast(pl.Int64).alias("fired"),
            pl.len().cast(pl.Int64).alias("days"),
        )
        .with_columns((pl.col("rmse_forecast") - pl.col("rmse_adjusted")).alias("rmse_reduction"))
        .select(
            "round", "start", "rmse_forecast", "rmse_adjusted", "rmse_reduction", "fired", "days"
        )
        .sort("start")
    )


def activations(impact: pl.DataFrame) -> pl.DataFrame:
    """``date, added, removed``: the days the set of active rules changed (the first day a
    rule is active counts as added), ids comma-separated."""
    require_columns(impact, ["date", "active_rule_ids"], "rule impact")
    rows = []
    before: set[str] = set()
    for day, ids in impact.sort("date").select("date", "active_rule_ids").iter_rows():
        now = {i.strip() for i in (ids or "").split(",") if i.strip()}
        if now != before:
            rows.append((day, ",".join(sorted(now - before)), ",".join(sorted(before - now))))
        before = now
    schema = {"date": pl.Date, "added": pl.String, "removed": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _mark_activations(ax: Axes, changes: pl.DataFrame, annotate: bool) -> None:
    for k, (day, added, removed) in enumerate(changes.iter_rows()):
        ax.axvline(day, color="#555555", linestyle="--", linewidth=0.8)
        if annotate:
            text = " ".join(
                [*(f"+{i}" for i in added.split(",") if i)]
                + [f"-{i}" for i in removed.split(",") if i]
            )
            ax.annotate(
                text,
                (day, 1.0 - 0.07 * (k % 3)),
                xycoords=("data", "axes fraction"),
                xytext=(3, -3),
                textcoords="offset points",
                fontsize=7,
                va="top",
                color="#333333",
            )


def rule_impact_chart(impact: pl.DataFrame, label: str, path: Path) -> Path:
    """Top: cumulative squared-error reduction of the rules since their first activation, the
    days the set of active rules changed marked. Bottom: per-round RMSE reduction."""
    gains = rule_gain(impact, label)
    per_round = round_rmse_change(impact, label)
    changes = activations(impact)
    fired = int(gains["rules_fired"].sum())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(WIDTH, 7.5), sharex=True, layout="constrained")
    dates, cumulative = gains["date"].to_list(), gains["cumulative_gain"].to_list()
    top.plot(dates, cumulative, color="black", linewidth=1.2)
    top.fill_between(
        dates,
        cumulative,
        0.0,
        where=[v >= 0 for v in cumulative],
        color=HELPED,
        alpha=0.3,
        interpolate=True,
    )
    top.fill_between(
        dates,
        cumulative,
        0.0,
        where=[v < 0 for v in cumulative],
        color=HURT,
        alpha=0.3,
        interpolate=True,
    )
    top.axhline(0.0, color="black", linewidth=0.6)
    _mark_activations(top, changes, annotate=changes.height <= 12)
    top.set_title(f"{label}: {impact_headline(gains)}", fontsize=10)
    if fired == 0:
        top.text(0.5, 0.6, "no rule fired", transform=top.transAxes, ha="center", fontsize=12)
    top.set_ylabel("Σ (unadjusted² - adjusted²) error")
    top.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    top.grid(alpha=0.3)
    low, high = top.get_ylim()
    top.set_ylim(low, high + (high - low) * 0.2)  # room for the activation labels
    _round_bars(bottom, per_round)
    _mark_activations(bottom, changes, annotate=False)
    date_axis(bottom)
    return save_figure(fig, path)


def impact_headline(gains: pl.DataFrame) -> str:
    """The chart's title from :func:`rule_gain`'s frame: the span and what the rules did."""
    fired = int(gains["rules_fired"].sum())
    active = (gains["active_rule_ids"] != "").any()
    span = "since the first activation" if active else "over the whole span (no rule active)"
    first = f"rules' cumulative squared-error reduction {span} (> 0 = rules helped)"
    if fired == 0:
        return f"{first}\nno rule fired: the forecast was never adjusted"
    total = float(gains["cumulative_gain"][-1])
    verdict = "helped" if total > 0 else "hurt" if total < 0 else "changed nothing"
    return f"{first}\nrules fired {fired} time(s) on {gains.height} days; in all they {verdict} ({total:+.3g})"


def _round_bars(ax: Axes, per_round: pl.DataFrame) -> None:
    starts = per_round["start"].to_list()
    gaps = per_round["start"].diff().dt.total_days().drop_nulls()
    width = 0.8 * float(gaps.median()) if gaps.len() else 20.0  # type: ignore[arg-type]
    reduction = per_round["rmse_reduction"].to_list()
    ax.bar(
        starts,
        reduction,
        width=width,
        align="edge",
        color=[HELPED if v > 0 else HURT for v in reduction],
    )
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(
        "RMSE reduction per round (RMSE before rules - after; > 0 = rules helped)", fontsize=10
    )
    ax.set_ylabel("RMSE reduction")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_xlabel("date (bars start at each round's first day)")
    ax.grid(alpha=0.3)
