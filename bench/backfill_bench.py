"""Backfill of retrodiction windows: one run per partition against one run over the range.

Both run the same asset (evaluation/retrodiction) on the same Dagster instance kind (SQLite
storage in a temporary DAGSTER_HOME) with the same champion model. Data: the real embedded
sources, ingested for 2015-2016 by the domain code; a small GRU champion is trained first.

Orchestration overhead = wall time - time inside the asset body (metadata compute_seconds,
summed over runs) - time reading the input partitions and writing the output partitions
(measured by doing the same reads and writes directly). Printed as a share of wall time.

    python bench/backfill_bench.py [--windows 365] [--per-partition-windows 365]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=365)
    parser.add_argument("--per-partition-windows", type=int, default=365)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    os.environ["PULSE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
    (home / "dagster").mkdir()
    shutil.copyfile(
        Path(__file__).resolve().parent.parent / "dagster.yaml", home / "dagster" / "dagster.yaml"
    )

    import dagster as dg

    from pulse_assets.config import Settings
    from pulse_assets.definitions import build_assets, build_resources
    from pulse_assets.defs.evaluation import RETRODICTION_KEY
    from pulse_assets.defs.partitions import range_tags
    from pulse_assets.storage import PartitionStore
    from pulse_assets_tests.conftest import populate_store, small_config, train_champion

    settings = Settings.model_validate(
        small_config(
            home, partitions={"start": "2014-01-01", "end": "2017-01-01", "timezone": "UTC"}
        )
    )
    populate_store(settings, date(2014, 1, 1), date(2016, 12, 31))
    train_champion(settings, home / "ck")
    resources = build_resources(settings)
    assets = build_assets(settings)
    last = date(2016, 12, 30)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def compute_seconds(instance, run_ids):
        total = 0.0
        for run_id in run_ids:
            records = instance.get_records_for_run(
                run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            seen = set()
            for record in records:
                meta = record.event_log_entry.asset_materialization.metadata
                if record.event_log_entry.run_id not in seen:
                    total += meta["compute_seconds"].value
                    seen.add(record.event_log_entry.run_id)
        return total

    with dg.DagsterInstance.get() as instance:
        first = last - timedelta(days=args.windows - 1)
        started = time.perf_counter()
        single = dg.materialize(
            assets,
            selection=[RETRODICTION_KEY],
            resources=resources,
            instance=instance,
            tags=range_tags(first.isoformat(), last.isoformat()),
            run_config=quiet,
        )
        single_wall = time.perf_counter() - started
        single_compute = compute_seconds(instance, [single.run_id])
        store = PartitionStore(settings.store.root)
        keys = [(first + timedelta(days=n)).isoformat() for n in range(args.windows)]
        frame = store.read("evaluation/retrodiction", keys)
        started = time.perf_counter()
        store.write_partitions("bench/retrodiction_copy", frame, keys)
        lookback = [(first - timedelta(days=n)).isoformat() for n in range(1, 41)]
        store.read("features/daily_features", [*lookback, *keys])
        store.read("features/daily_labels", [*lookback[:10], *keys])
        storage = time.perf_counter() - started

        per_first = last - timedelta(days=args.per_partition_windows - 1)
        run_ids = []
        started = time.perf_counter()
        for n in range(args.per_partition_windows):
            key = (per_first + timedelta(days=n)).isoformat()
            result = dg.materialize(
                assets,
                selection=[RETRODICTION_KEY],
                resources=resources,
                instance=instance,
                partition_key=key,
                run_config=quiet,
            )
            run_ids.append(result.run_id)
        per_wall = time.perf_counter() - started
        per_compute = compute_seconds(instance, run_ids)
    per_scaled = per_wall * args.windows / args.per_partition_windows
    overhead = single_wall - single_compute - storage
    print(f"retrodiction backfill of {args.windows} daily windows (real data, GRU champion)")
    print(
        f"one run over the range:   {single_wall:.1f} s wall; asset body {single_compute:.2f} s, "
        f"partition reads and writes {storage:.2f} s, orchestration {overhead:.1f} s = {overhead / single_wall:.0%} of wall"
    )
    print(
        f"one run per partition:    {per_wall:.1f} s for {args.per_partition_windows} runs "
        f"({per_wall / args.per_partition_windows:.2f} s a run; asset bodies {per_compute:.1f} s)"
        + (
            ""
            if args.per_partition_windows == args.windows
            else f", {per_scaled:.0f} s scaled to {args.windows}"
        )
    )
    print(f"speed-up of the single run: {per_scaled / single_wall:.1f}x")
    print(f"peak memory of this process: {peak_rss_mb():.0f} MiB")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
