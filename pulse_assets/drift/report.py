"""A day's drift check: recent feature rows against the champion's training rows."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from pulse_assets.config import DriftConfig
from pulse_assets.drift.statistics import as_frame, detect_drift, multivariate_mmd
from pulse_assets.storage import PartitionStore

MULTIVARIATE_FEATURE = "__multivariate_mmd__"


def daily_reports(
    reference: pl.DataFrame,
    recent: pl.DataFrame,
    feature_names: list[str],
    days: list[date],
    config: DriftConfig,
    champion_version: str,
    multivariate_on: date | None,
) -> pl.DataFrame:
    """One block of rows per day that has feature rows: each feature's test over the
    ``window_days`` ending that day; on ``multivariate_on`` also the MMD test (one row)."""
    blocks = []
    observed = set(recent.get_column("date").to_list())
    for day in days:
        if day not in observed:
            continue
        first = day - timedelta(days=config.window_days - 1)
        current = recent.filter(pl.col("date").is_between(first, day))
        block = as_frame(detect_drift(reference, current, feature_names, config))
        if day == multivariate_on:
            mmd = multivariate_mmd(
                reference.select(feature_names).to_numpy(),
                current.select(feature_names).to_numpy(),
                config.multivariate.subsample,
                config.multivariate.n_permutations,
                config.multivariate.p_value,
                seed=day.toordinal(),
            )
            block = pl.concat(
                [
                    block,
                    pl.DataFrame(
                        [
                            {
                                "feature": MULTIVARIATE_FEATURE,
                                "kind": "multivariate",
                                "statistic": mmd["distance"],
                                "p_value": mmd["p_value"],
                                "q_value": mmd["p_value"],
                                "psi": 0.0,
                                "wasserstein": 0.0,
                                "reference_n": mmd["reference_n"],
                                "current_n": mmd["current_n"],
                                "drifted": mmd["is_drift"],
                                "note": "alibi-detect MMDDrift, PyTorch backend, subsample",
                            }
                        ]
                    ),
                ],
                how="vertical_relaxed",
            )
        blocks.append(
            block.with_columns(
                pl.lit(day).alias("date"), pl.lit(champion_version).alias("champion_version")
            )
        )
    if not blocks:
        return pl.DataFrame(schema=REPORT_SCHEMA)
    return pl.concat(blocks, how="vertical_relaxed").select(list(REPORT_SCHEMA))


REPORT_SCHEMA = {
    "date": pl.Date(),
    "champion_version": pl.String(),
    "feature": pl.String(),
    "kind": pl.String(),
    "statistic": pl.Float64(),
    "p_value": pl.Float64(),
    "q_value": pl.Float64(),
    "psi": pl.Float64(),
    "wasserstein": pl.Float64(),
    "reference_n": pl.Int64(),
    "current_n": pl.Int64(),
    "drifted": pl.Boolean(),
    "note": pl.String(),
}
REPORT_DESCRIPTIONS = {
    "date": "the day checked: its trailing drift.window_days of feature rows",
    "champion_version": "the champion whose training rows are the reference",
    "feature": "the feature tested (__multivariate_mmd__: all features together)",
    "kind": "continuous (KS test), categorical (chi-square) or multivariate (MMD)",
    "statistic": "the test statistic (KS D, chi-square, or MMD distance)",
    "p_value": "the test's p-value",
    "q_value": "Benjamini-Hochberg q-value over the day's features",
    "psi": "population stability index (effect size)",
    "wasserstein": "Wasserstein distance / reference standard deviation (effect size)",
    "reference_n": "reference rows (the champion's training span)",
    "current_n": "recent rows tested",
    "drifted": "q below drift.fdr_q and an effect past min_psi or min_wasserstein",
    "note": "how the test was run, when it matters",
}


def drifted_by_day(reports: pl.DataFrame, champion_version: str) -> list[tuple[date, set[str]]]:
    """(day, univariate features that drifted) for the champion's checks, in time order."""
    mine = reports.filter(
        (pl.col("champion_version") == champion_version) & (pl.col("kind") != "multivariate")
    )
    days = (
        mine.group_by("date")
        .agg(pl.col("feature").filter(pl.col("drifted")).alias("drifted"))
        .sort("date")
    )
    return [(row["date"], set(row["drifted"])) for row in days.iter_rows(named=True)]


def recent_checks(
    store: PartitionStore, table: str, champion_version: str, needed: int
) -> list[tuple[date, set[str]]]:
    """The latest drift checks of this champion, newest partitions first until ``needed`` are
    read or another champion's checks begin; returned oldest first."""
    frames = []
    for key in reversed(store.keys(table)):
        frame = store.read(table, [key])
        if frame.height == 0:
            continue
        if not drifted_by_day(frame, champion_version):
            break
        frames.append(frame)
        if len(frames) >= needed:
            break
    return drifted_by_day(pl.concat(frames), champion_version) if frames else []
