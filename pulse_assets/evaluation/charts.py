"""Charts of the walk-forward, as matplotlib PNG files (Agg: no display needed).

Every chart is a plain function ``<name>(frame, ..., path) -> path``. The numbers a chart
draws come from small functions here (rolling and per-round RMSE, the champion's loss relative
to the best baseline, the cumulative Diebold-Mariano statistic) so they can be tested apart
from the drawing. Empty or incomplete input raises :class:`ChartInputError` naming what is
missing: a chart is never an empty picture.

Scoring days: like :func:`pulse_assets.evaluation.scoreboard.skill_table`, every forecaster is
scored on the days where the actual, the champion and every baseline are known, so none is
scored on easier days than another; the challenger's shadow on the subset of those it forecast.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402  (the backend is chosen first)
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.gridspec import GridSpec  # noqa: E402

from pulse_assets.errors import PulseError  # noqa: E402
from pulse_assets.evaluation.baselines import Baseline  # noqa: E402
from pulse_assets.evaluation.scoreboard import CHAMPION, SHADOW, forecaster_columns  # noqa: E402
from pulse_assets.evaluation.significance import Loss, diebold_mariano  # noqa: E402

ROLLING_DAYS = 63  # about a quarter of trading days
DPI = 90
WIDTH = 11.0  # inches: 990 px at DPI
DM_REFERENCE = 1.645  # one-sided 5% (two-sided 10%) critical value of the standard normal
STYLE = {
    CHAMPION: ("#1f77b4", 2.0),
    SHADOW: ("#9467bd", 1.0),
    "naive": ("#7f7f7f", 1.0),
    "trailing_mean": ("#2ca02c", 1.2),
    "ewma": ("#ff7f0e", 1.2),
    "garch": ("#d62728", 1.2),
}
ACTUAL_COLOR = "#c8c8c8"
BASELINES = [b.value for b in Baseline]


class ChartInputError(PulseError, ValueError):
    """A chart's input frame lacks the rows or columns the chart is drawn from."""


# --- shared helpers (the drift, training and rules charts use them too) ----------------------


def require_columns(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    """Raise naming the columns of ``what`` that ``frame`` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ChartInputError(
            f"the {what} frame lacks column(s) {missing} (it has {frame.columns}); "
            "pass the frame the chart is documented to read"
        )


def require_rows(frame: pl.DataFrame, what: str) -> None:
    if frame.height == 0:
        raise ChartInputError(f"no {what}: nothing to chart")


def style(name: str) -> tuple[str | None, float]:
    return STYLE.get(name, (None, 1.0))


def date_axis(ax: Axes) -> None:
    """Concise date ticks (years once, then months) on the x axis."""
    locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def legend_in_headroom(ax: Axes, ncol: int, share: float = 0.22, fontsize: int = 8) -> None:
    """A one-row legend in a band added above the data, so it covers none of it."""
    bottom, top = ax.get_ylim()
    ax.set_ylim(bottom, bottom + (top - bottom) / (1.0 - share))
    ax.legend(loc="upper left", ncol=ncol, fontsize=fontsize, frameon=False)


def legend_outside(ax: Axes, fontsize: int = 8) -> None:
    """The legend to the right of the axes (constrained layout makes room for it)."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fontsize, frameon=False)


def save_figure(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


# --- the numbers ------------------------------------------------------------------------------


def _scored_columns(frame: pl.DataFrame, label: str) -> dict[str, str]:
    """Forecaster -> column for the champion and every baseline (required) and the shadow
    (when the frame has it)."""
    columns = forecaster_columns(label)
    required = [f"actual_{label}", *(c for n, c in columns.items() if n != SHADOW)]
    require_columns(frame, ["date", *required], "retrodiction")
    return {n: c for n, c in columns.items() if c in frame.columns}


def common_days(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows where the actual, the champion and every baseline are known, by date."""
    columns = _scored_columns(frame, label)
    needed = [f"actual_{label}", *(c for n, c in columns.items() if n != SHADOW)]
    common = frame.drop_nulls(needed).sort("date")
    if common.height == 0:
        raise ChartInputError(
            f"no retrodicted day has the actual and every forecast of {label!r} known "
            f"({frame.height} rows in all): materialize evaluation/retrodiction for days whose "
            "label is known"
        )
    return common


def rolling_rmse(frame: pl.DataFrame, label: str, days: int = ROLLING_DAYS) -> pl.DataFrame:
    """``date`` and each forecaster's RMSE over the last ``days`` common days (null until
    half of them are there); the shadow is left out: it has no forecast in the first round."""
    common = common_days(frame, label)
    actual = pl.col(f"actual_{label}")
    columns = {n: c for n, c in _scored_columns(frame, label).items() if n != SHADOW}
    return common.select(
        "date",
        *(
            ((pl.col(c) - actual) ** 2)
            .rolling_mean(days, min_samples=max(days // 2, 1))
            .sqrt()
            .alias(n)
            for n, c in columns.items()
        ),
    )


def _rounds(frame: pl.DataFrame) -> pl.DataFrame:
    """Each round with its first day, in time order."""
    require_columns(frame, ["round", "date"], "retrodiction")
    return frame.group_by("round").agg(pl.col("date").min().alias("start")).sort("start")


def per_round_rmse(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """``round, start, forecaster, rmse, days``: each forecaster's RMSE on each round's common
    days (the shadow on those it forecast; absent for a round where it forecast none)."""
    common = common_days(frame, label)
    starts = _rounds(common)
    actual = pl.col(f"actual_{label}")
    parts = [
        common.drop_nulls(column)
        .group_by("round")
        .agg(
            ((pl.col(column) - actual) ** 2).mean().sqrt().alias("rmse"),
            pl.len().cast(pl.Int64).alias("days"),
        )
        .with_columns(pl.lit(name).alias("forecaster"))
        for name, column in _scored_columns(frame, label).items()
    ]
    return (
        pl.concat(parts)
        .join(starts, on="round")
        .select("round", "start", "forecaster", "rmse", "days")
        .sort("start", "forecaster")
    )


def relative_loss(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Per round: the champion's RMSE divided by (a) the RMSE of the baseline that was best
    over the whole span (``span_best``, one rival for every round) and (b) that round's best
    baseline (``round_best``, the toughest rival in hindsight). Below 1: the champion's loss
    was lower."""
    rmse = per_round_rmse(frame, label)
    common = common_days(frame, label)
    actual = pl.col(f"actual_{label}")
    pooled = {
        b: float(common.select(((pl.col(f"{b}_{label}") - actual) ** 2).mean().sqrt()).item())
        for b in BASELINES
    }
    span_best = min(pooled, key=lambda name: pooled[name])
    wide = rmse.pivot("forecaster", index=["round", "start"], values="rmse")
    round_best = pl.concat_list(BASELINES).list.arg_min()
    return (
        wide.with_columns(
            pl.col(CHAMPION).alias("champion_rmse"),
            pl.lit(span_best).alias("span_best"),
            pl.col(span_best).alias("span_best_rmse"),
            round_best.replace_strict(dict(enumerate(BASELINES))).alias("round_best"),
            pl.min_horizontal(BASELINES).alias("round_best_rmse"),
        )
        .with_columns(
            (pl.col("champion_rmse") / pl.col("span_best_rmse")).alias("ratio_span_best"),
            (pl.col("champion_rmse") / pl.col("round_best_rmse")).alias("ratio_round_best"),
        )
        .select(
            "round",
            "start",
            "champion_rmse",
            "span_best",
            "span_best_rmse",
            "ratio_span_best",
            "round_best",
            "round_best_rmse",
            "ratio_round_best",
        )
        .sort("start")
    )


def cumulative_dm(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """``round, start, baseline, dm_statistic, p_value, days``: the champion against each
    baseline (two-sided Diebold-Mariano, squared loss, h = 1, HLN-corrected) over every day
    from the first round up to and including this one. Negative: the champion's loss was
    lower. A prefix with fewer than 3 paired days has no row (the test needs 3)."""
    require_columns(frame, ["round"], "retrodiction")
    columns = _scored_columns(frame, label)
    actual, champion = f"actual_{label}", columns[CHAMPION]
    ordered = _rounds(frame)
    rows = []
    for k, (round_key, start) in enumerate(ordered.iter_rows()):
        upto = frame.filter(pl.col("round").is_in(ordered["round"].head(k + 1).implode()))
        for baseline in BASELINES:
            paired = upto.drop_nulls([actual, champion, columns[baseline]])
            if paired.height < 3:
                continue
            test = diebold_mariano(
                paired[champion] - paired[actual],
                paired[columns[baseline]] - paired[actual],
                Loss.SQUARED,
            )
            rows.append((round_key, start, baseline, test.statistic, test.p_value, test.n))
    schema = {"round": pl.String, "start": pl.Date, "baseline": pl.String}
    schema |= {"dm_statistic": pl.Float64, "p_value": pl.Float64, "days": pl.Int64}
    result = pl.DataFrame(rows, schema=schema, orient="row")
    if result.height == 0:
        raise ChartInputError(
            "no round prefix has 3 days with the champion, a baseline and the actual known: "
            "the Diebold-Mariano test needs at least 3"
        )
    return result


def champion_changes(frame: pl.DataFrame) -> pl.DataFrame:
    """``date, model_version``: the days the champion of the day changed (promotions)."""
    require_columns(frame, ["date", "model_version"], "retrodiction")
    ordered = frame.sort("date").select("date", "model_version")
    changed = pl.col("model_version") != pl.col("model_version").shift(1)
    return ordered.filter(changed.fill_null(False))


# --- the charts -------------------------------------------------------------------------------


def _mark_promotions(ax: Axes, changes: pl.DataFrame, annotate: bool) -> None:
    """Dotted lines on the days the champion changed; with ``annotate``, the new version's
    number just above the axes (outside the data)."""
    for day, version in changes.iter_rows():
        ax.axvline(day, color="#1f77b4", linestyle=":", linewidth=0.8, alpha=0.7)
        if annotate:
            ax.annotate(
                f"v{version}",
                (day, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                color="#1f77b4",
                ha="center",
                va="bottom",
            )


def _versions_line(frame: pl.DataFrame) -> str:
    first = frame.sort("date")["model_version"][0]
    promotions = champion_changes(frame).height
    return f"first champion v{first}, {promotions} promotion(s) (dotted lines)"


def forecast_chart(retrodiction: pl.DataFrame, label: str, path: Path) -> Path:
    """Top: each forecaster's rolling out-of-sample RMSE, promotions marked. Below: one panel
    per baseline with the actual (grey), the champion of the day and that baseline."""
    common = common_days(retrodiction, label)
    rolling = rolling_rmse(retrodiction, label)
    changes = champion_changes(common)
    fig = plt.figure(figsize=(WIDTH, 10.5), layout="constrained")
    grid = fig.add_gridspec(3, 2, height_ratios=[1.3, 1, 1])
    top = fig.add_subplot(grid[0, :])
    dates = rolling["date"].to_list()
    for name in rolling.columns[1:]:
        color, width = style(name)
        top.plot(dates, rolling[name].to_list(), label=name, color=color, linewidth=width)
    _mark_promotions(top, changes, annotate=changes.height <= 24)
    top.set_ylabel(f"RMSE, trailing {ROLLING_DAYS} days")
    top.set_title(
        f"{label}: rolling out-of-sample RMSE per forecaster (lower is better)\n"
        f"{_versions_line(common)}",
        fontsize=10,
        pad=14,
    )
    top.grid(alpha=0.3)
    date_axis(top)
    legend_in_headroom(top, ncol=len(rolling.columns) - 1)
    _forecast_panels(fig, grid, common, label, changes)
    return save_figure(fig, path)


COLOR_NAMES = {"naive": "grey", "trailing_mean": "green", "ewma": "orange", "garch": "red"}


def _forecast_panels(
    fig: Figure, grid: GridSpec, common: pl.DataFrame, label: str, changes: pl.DataFrame
) -> None:
    actual = common[f"actual_{label}"]
    champion = common[f"forecast_{label}"]
    # the daily |return| has rare huge days: the axis is cut at its 99th percentile so the
    # forecasts stay readable; every forecast but the naive one (|return| too) stays inside
    smooth = pl.concat([champion, *(common[f"{b}_{label}"] for b in BASELINES if b != "naive")])
    ceiling = max(float(actual.quantile(0.99) or 0.0), float(smooth.max()))  # type: ignore[arg-type]
    floor = min(0.0, float(smooth.min()))  # type: ignore[arg-type]
    dates = common["date"].to_list()
    first: Axes | None = None
    for k, baseline in enumerate(BASELINES):
        ax = fig.add_subplot(grid[1 + k // 2, k % 2], sharex=first, sharey=first)
        first = first or ax
        color, _ = style(baseline)
        ax.plot(dates, actual.to_list(), color=ACTUAL_COLOR, linewidth=0.6)
        ax.plot(dates, common[f"{baseline}_{label}"].to_list(), color=color, linewidth=0.8)
        ax.plot(dates, champion.to_list(), color=style(CHAMPION)[0], linewidth=1.1)
        _mark_promotions(ax, changes, annotate=False)
        ax.set_ylim(floor, ceiling * 1.05)
        ax.set_title(
            f"champion (blue) vs {baseline} ({COLOR_NAMES.get(baseline, 'colour')}); "
            "actual light grey",
            fontsize=9,
        )
        if k % 2 == 0:
            ax.set_ylabel(f"{label}\n(axis cut at the actual's 99th pct)", fontsize=8)
        ax.grid(alpha=0.3)
        date_axis(ax)


def _round_axis(ax: Axes, rounds: Sequence[str]) -> None:
    """Rounds as categorical ticks; at most ~24 labels so they stay readable."""
    step = max(1, -(-len(rounds) // 24))
    ax.set_xticks(range(0, len(rounds), step))
    ax.set_xticklabels([rounds[k] for k in range(0, len(rounds), step)], rotation=60, ha="right")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlim(-0.7, len(rounds) - 0.3)
    ax.set_xlabel("round")


def relative_loss_chart(retrodiction: pl.DataFrame, label: str, path: Path) -> Path:
    """Bars: champion RMSE / RMSE of the baseline best over the whole span, per round; dots:
    / that round's best baseline. A line at 1: below it the champion's loss was lower."""
    table = relative_loss(retrodiction, label)
    rounds = table["round"].to_list()
    ratio = table["ratio_span_best"].to_list()
    span_best = table["span_best"][0]
    fig, ax = plt.subplots(figsize=(WIDTH, 5.2), layout="constrained")
    colors = ["#2ca02c" if r < 1.0 else "#d62728" for r in ratio]
    x = list(range(len(rounds)))
    ax.bar(x, ratio, color=colors, alpha=0.75, label=f"vs {span_best} (best over the span)")
    ax.plot(
        x,
        table["ratio_round_best"].to_list(),
        "o",
        color="black",
        markersize=4,
        label="vs that round's best baseline",
    )
    ax.axhline(1.0, color="black", linewidth=1.0)
    wins = sum(r < 1.0 for r in ratio)
    ax.set_title(
        f"{label}: champion RMSE / best baseline RMSE per round\n(bars: the best baseline "
        f"over the whole span, {span_best}; dots: each round's own best baseline); below 1 = "
        f"champion better, bars: {wins} of {len(rounds)} rounds",
        fontsize=10,
    )
    ax.set_ylabel("RMSE ratio (champion / baseline)")
    ax.set_ylim(0.0, max(max(ratio), max(table["ratio_round_best"].to_list()), 1.0) * 1.08)
    _round_axis(ax, rounds)
    ax.grid(axis="y", alpha=0.3)
    legend_in_headroom(ax, ncol=2)
    return save_figure(fig, path)


def loss_per_round_chart(retrodiction: pl.DataFrame, label: str, path: Path) -> Path:
    """RMSE per round of every forecaster (lines), on each round's common days."""
    table = per_round_rmse(retrodiction, label)
    rounds = _rounds(table.rename({"start": "date"}))["round"].to_list()
    position = {r: k for k, r in enumerate(rounds)}
    fig, ax = plt.subplots(figsize=(WIDTH, 5.2), layout="constrained")
    for name in [CHAMPION, SHADOW, *BASELINES]:
        rows = table.filter(pl.col("forecaster") == name)
        if rows.height == 0:
            continue
        color, width = style(name)
        ax.plot(
            [position[r] for r in rows["round"].to_list()],
            rows["rmse"].to_list(),
            marker="o",
            markersize=3,
            color=color,
            linewidth=width,
            linestyle="--" if name == SHADOW else "-",
            label=name,
        )
    ax.set_title(
        f"{label}: out-of-sample RMSE per round and forecaster (lower is better)\n"
        "challenger_shadow: the round's challenger, forecasting in the shadow",
        fontsize=10,
    )
    ax.set_ylabel("RMSE in the round")
    _round_axis(ax, rounds)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save_figure(fig, path)


def cumulative_dm_chart(retrodiction: pl.DataFrame, label: str, path: Path) -> Path:
    """The Diebold-Mariano statistic of the champion against each baseline over all days up
    to each round (squared loss), with the ±1.645 lines."""
    table = cumulative_dm(retrodiction, label)
    rounds = _rounds(table.rename({"start": "date"}))["round"].to_list()
    position = {r: k for k, r in enumerate(rounds)}
    fig, ax = plt.subplots(figsize=(WIDTH, 5.2), layout="constrained")
    for baseline in BASELINES:
        rows = table.filter(pl.col("baseline") == baseline)
        color, width = style(baseline)
        ax.plot(
            [position[r] for r in rows["round"].to_list()],
            rows["dm_statistic"].to_list(),
            marker="o",
            markersize=3,
            color=color,
            linewidth=width,
            label=f"vs {baseline}",
        )
    for level in (-DM_REFERENCE, DM_REFERENCE):
        ax.axhline(level, color="black", linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.6)
    low, high = ax.get_ylim()
    ax.set_ylim(min(low, -2.2), max(high, 2.2))
    ax.axhspan(
        ax.get_ylim()[0],
        -DM_REFERENCE,
        color="#2ca02c",
        alpha=0.08,
        label=f"< -{DM_REFERENCE}: champion better\n(5%, one-sided)",
    )
    ax.axhspan(
        DM_REFERENCE,
        ax.get_ylim()[1],
        color="#d62728",
        alpha=0.08,
        label=f"> {DM_REFERENCE}: baseline better\n(5%, one-sided)",
    )
    ax.set_title(
        f"{label}: Diebold-Mariano statistic of the champion vs each baseline\n"
        "over all days up to each round (squared loss, HLN; < 0 = champion's loss lower)",
        fontsize=10,
    )
    ax.set_ylabel("DM statistic, cumulative")
    _round_axis(ax, rounds)
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save_figure(fig, path)
