"""Blend raw sources on date and run the configured steps: the ``daily_features`` table.

Order: date each source's values by when they became known (its date plus the input's
``published_lag_days``), outer-join the sources on that date (every day any source's value
became known), forward-fill with staleness, keep the spine source's days (trading days),
compute indicators, normalize, drop the raw level columns that only fed the steps, then
drop warm-up rows whose windows are not yet full and keep the requested days. Each row reads
only raw values known at or before it, and only a bounded number of rows back
(``FeaturesConfig.lookback_rows``), so one day computed alone equals the same day computed
inside a long range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import reduce

import polars as pl

from pulse_assets.config import (
    FeatureInput,
    FeaturesConfig,
    FillnaStep,
    IndicatorStep,
    LabelSpec,
    NormalizeStep,
)
from pulse_assets.errors import FeatureError
from pulse_assets.features.steps import (
    STALENESS_SUFFIX,
    calculate_indicators,
    forward_fill_with_staleness,
    indicator_name,
    normalize,
)

SPINE_FLAG = "__on_spine"
LABEL_PREFIX = "label_"


@dataclass(frozen=True)
class FeatureTable:
    """Feature rows for the requested days and how many computed rows were warm-up."""

    frame: pl.DataFrame
    warmup_rows: int


def _source_columns(name: str, frame: pl.DataFrame, inp: FeatureInput) -> pl.LazyFrame:
    """The input's columns under its prefix, dated by the day they became known.

    A value dated d with lag L is known from calendar day d + L; when that is not a spine day,
    the forward fill carries it to the first spine day after it. Staleness and
    ``max_staleness_days`` count from d + L: its age since d is that plus the constant L.
    """
    columns, entity = inp.columns, inp.entity
    missing = [c for c in ["date", "entity", *columns] if c not in frame.columns]
    if missing:
        raise FeatureError(
            f"features input {name!r} lacks column(s) {missing}; found {frame.columns}"
        )
    if entity is not None:
        frame = frame.filter(pl.col("entity") == entity)
    duplicated = frame.filter(pl.col("date").is_duplicated())
    if duplicated.height:
        days = duplicated.get_column("date").unique().sort().head(3).to_list()
        raise FeatureError(
            f"features input {name!r} has several entities on one day (first days: {days}); "
            "set features.inputs.<name>.entity to pick one"
        )
    known_on = pl.col("date").dt.offset_by(f"{inp.published_lag_days}d")
    return frame.lazy().select(
        known_on.alias("date"),
        *[pl.col(c).cast(pl.Float64).alias(inp.blended(c)) for c in columns],
    )


def blend(frames: Mapping[str, pl.DataFrame], spec: FeaturesConfig) -> pl.LazyFrame:
    """Full outer join of the inputs on the day their values became known, sorted, with a flag
    for the spine's days."""
    missing = [name for name in spec.inputs if name not in frames]
    if missing:
        raise FeatureError(f"features need input(s) {missing}; got {sorted(frames)}")
    parts = []
    for name, inp in spec.inputs.items():
        part = _source_columns(name, frames[name], inp)
        if name == spec.spine:
            part = part.with_columns(pl.lit(True).alias(SPINE_FLAG))
        parts.append(part)
    joined = reduce(
        lambda left, right: left.join(right, on="date", how="full", coalesce=True), parts
    )
    return joined.with_columns(pl.col(SPINE_FLAG).fill_null(False)).sort("date")


def run_steps(frame: pl.LazyFrame, spec: FeaturesConfig, by: str | None = None) -> pl.LazyFrame:
    """Apply the configured steps; the spine filter runs right after ``fillna``.

    The raw level columns (``FeaturesConfig.dropped_raw_columns``) feed the steps and are
    dropped at the end, so only stationary transforms of them become features.
    """
    steps = list(spec.steps)
    if steps and isinstance(first := steps[0], FillnaStep):
        steps.pop(0)
        fill = first.params
        groups = {
            inp.prefix: ([inp.blended(c) for c in inp.columns], inp.max_staleness_days)
            for inp in spec.inputs.values()
        }
        frame = forward_fill_with_staleness(
            frame,
            groups,
            fill_value=fill.fill_value,
            staleness_cap_days=fill.staleness_cap_days,
            by=by,
        )
    frame = frame.filter(pl.col(SPINE_FLAG)).drop(SPINE_FLAG)
    for step in steps:
        if isinstance(step, IndicatorStep):
            frame = calculate_indicators(frame, step.params.indicators, by=by)
        elif isinstance(step, NormalizeStep):
            keys = {"date", by} if by else {"date"}
            columns = step.params.columns or [
                c
                for c in frame.collect_schema().names()
                if c not in keys and not c.endswith(STALENESS_SUFFIX)
            ]
            frame = normalize(frame, columns, step.params, by=by)
    return frame.drop(spec.dropped_raw_columns())


def feature_columns(frame: pl.DataFrame | pl.LazyFrame) -> list[str]:
    names = frame.collect_schema().names()
    return [c for c in names if c not in ("date", "entity") and not c.startswith(LABEL_PREFIX)]


def build_daily_features(
    frames: Mapping[str, pl.DataFrame], spec: FeaturesConfig, start: date, end: date
) -> FeatureTable:
    """Feature rows for spine days in [start, end) from raw frames covering the lookback."""
    computed = run_steps(blend(frames, spec), spec).collect()
    requested = computed.filter(pl.col("date").is_between(start, end, closed="left"))
    complete = requested.drop_nulls(feature_columns(requested))
    return FeatureTable(frame=complete, warmup_rows=requested.height - complete.height)


def _label_expr(label: LabelSpec) -> pl.Expr:
    value = pl.col(label.column).cast(pl.Float64)
    following = value.shift(-1)
    if label.kind == "value_next":
        return following
    log_return = (following / value).log()
    return log_return.abs() if label.kind == "abs_log_return_next" else log_return


def build_labels(
    frames: Mapping[str, pl.DataFrame], labels: list[LabelSpec], spine: str, start: date, end: date
) -> pl.DataFrame:
    """``label_<name>`` per spine day in [start, end): the next spine day's target value.

    Labels read the future by definition, so they live in their own asset and are never
    inputs to features. A label whose next day is not in the store yet is null.
    """
    if spine not in frames:
        raise FeatureError(f"labels need the spine source {spine!r}; got {sorted(frames)}")
    days = frames[spine].select("date").unique().sort("date")
    for label in labels:
        source = frames[label.source]
        if label.entity is not None:
            source = source.filter(pl.col("entity") == label.entity)
        if source.get_column("date").is_duplicated().any():
            raise FeatureError(
                f"label {label.name!r}: source {label.source!r} has several entities per day; "
                "set the label's entity"
            )
        values = source.sort("date").select(
            "date", _label_expr(label).alias(LABEL_PREFIX + label.name)
        )
        days = days.join(values, on="date", how="left")
    return days.filter(pl.col("date").is_between(start, end, closed="left"))


INDICATOR_MEANINGS = {
    "log_return": "log return of {column} over {window} row(s)",
    "rolling_volatility": "standard deviation of {column} over the trailing {window} rows",
    "momentum": "{column} relative to {window} rows earlier, minus 1",
    "ma_gap": "{column} relative to its trailing {window}-row mean, minus 1",
    "change": "{column} minus its value {window} rows earlier",
    "rolling_zscore": "{column} as a z-score against its trailing {window} rows",
    "rsi": "relative strength index of {column} over {window} rows (0-100)",
}


def feature_descriptions(config: FeaturesConfig) -> dict[str, str]:
    """What each column of daily_features holds, derived from the steps that make it (one
    place: the configured pipeline), for the column schema the UI shows."""
    described: dict[str, str] = {}
    for source, inp in config.inputs.items():
        lag = (
            f", known {inp.published_lag_days} day(s) after its date"
            if inp.published_lag_days
            else ""
        )
        for column in inp.columns:
            described[inp.blended(column)] = (
                f"{source}.{column}{lag}, carried forward at most {inp.max_staleness_days} days"
            )
        described[f"{inp.prefix}{STALENESS_SUFFIX}"] = (
            f"days since a value of {source} last became known"
        )
    for step in config.steps:
        if isinstance(step, IndicatorStep):
            for spec in step.params.indicators:
                for window in spec.windows:
                    text = INDICATOR_MEANINGS[spec.kind].format(column=spec.column, window=window)
                    described[indicator_name(spec, window)] = text
        elif isinstance(step, NormalizeStep):
            params = step.params
            suffix = params.suffix or ("_z" if params.method == "z-score" else "_mm")
            for column in params.columns or []:
                described[f"{column}{suffix}"] = (
                    f"{column} scaled ({params.method}) by its trailing {params.window} rows"
                )
    for label in config.labels:
        described[f"{LABEL_PREFIX}{label.name}"] = (
            f"target: {label.kind.replace('_', ' ')} of {label.source}.{label.column} "
            "(the next trading day's value; never an input)"
        )
    return described
