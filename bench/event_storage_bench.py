"""Dagster's event storage: SQLite (the local profile) against PostgreSQL (the production
profile) for a 365-partition single-run backfill.

The asset is raw/market_prices (the real embedded S&P 500 source) over one year of daily
partitions, in one run (BackfillPolicy.single_run), as the project's range runs are. Each arm
runs in its own process on a fresh instance made from the profile's own dagster.yaml:

- sqlite:    configs/deploy/local/dagster.yaml (SQLite files in a temporary DAGSTER_HOME)
- postgres:  configs/deploy/production/dagster.yaml (a fresh database on 127.0.0.1:5432)
- *_batched: the same with DAGSTER_EVENT_BATCH_SIZE set, so a range's per-partition
  materializations are handed to the storage in batches (Dagster's opt-in; PostgreSQL writes a
  batch in one statement, SQLite's storage writes it event by event)

Each arm first runs one week of 2014 (not timed: imports, first connections, table creation),
then a year of partitions from 2015-01-01 and one from 2016-01-01; the better of the two is
reported (the machine is shared). "Event writes" is the time spent inside the event-log
storage's store_event/store_event_batch, measured by wrapping them; "events" counts what the
run stored. DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1, as the project sets it.

    python bench/event_storage_bench.py [--days 365] [--batch-size 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", "5432", "postgres"
ADMIN_URL = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
YEARS = (2015, 2016)  # one timed run per year, each a fresh range of the same asset
WARM_UP = (date(2014, 3, 3), date(2014, 3, 9))
ARMS = {
    "sqlite": ("local", False),
    "sqlite_batched": ("local", True),
    "postgres": ("production", False),
    "postgres_batched": ("production", True),
}


class WriteTimer:
    """Wraps an event-log storage's write methods; totals their time and the events stored."""

    NAMES = ("store_event", "store_event_batch")

    def __init__(self, storage: Any) -> None:
        self.seconds, self.events, self.calls = 0.0, 0, 0
        self._storage, self._depth = storage, 0
        for name in self.NAMES:
            setattr(storage, name, self._timed(getattr(storage, name), name))

    def restore(self) -> None:
        """Back to the storage's own methods (the wrappers were instance attributes)."""
        for name in self.NAMES:
            delattr(self._storage, name)

    def _timed(self, write: Callable[[Any], None], name: str) -> Callable[[Any], None]:
        def timed(events: Any) -> None:
            if self._depth:  # SQLite's store_event_batch calls store_event: counted once
                write(events)
                return
            self._depth += 1
            started = time.perf_counter()
            try:
                write(events)
            finally:
                self._depth -= 1
            self.seconds += time.perf_counter() - started
            self.events += len(events) if name == "store_event_batch" else 1
            self.calls += 1

        return timed


def phase(arm: str, days: int, batch_size: int, database: str) -> dict[str, Any]:
    """One arm in this process: warm-up week, then the timed range."""
    profile, batched = ARMS[arm]
    home = Path(tempfile.mkdtemp(prefix=f"events_{arm}_"))
    os.environ.update(
        PULSE_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster"),
        DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="1",
        PGHOST=PG_HOST,
        PGPORT=PG_PORT,
        PGUSER=PG_USER,
        PGDATABASE=database,
    )
    if batched:
        os.environ["DAGSTER_EVENT_BATCH_SIZE"] = str(batch_size)
    (home / "dagster").mkdir(parents=True)
    shutil.copyfile(
        ROOT / "configs" / "deploy" / profile / "dagster.yaml", home / "dagster" / "dagster.yaml"
    )

    import dagster as dg

    from pulse_assets.config import Settings
    from pulse_assets.definitions import build_assets, build_resources
    from pulse_assets.defs.partitions import range_tags
    from pulse_assets.defs.raw import raw_key
    from pulse_assets_tests.conftest import small_config

    settings = Settings.model_validate(
        small_config(
            home, partitions={"start": "2014-01-01", "end": "2018-01-01", "timezone": "UTC"}
        )
    )
    assets, resources = build_assets(settings), build_resources(settings)
    key = raw_key("market_prices")
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def materialize(instance: dg.DagsterInstance, first: date, last: date) -> str:
        result = dg.materialize(
            assets,
            selection=[key],
            resources=resources,
            instance=instance,
            tags=range_tags(first.isoformat(), last.isoformat()),
            run_config=quiet,
        )
        return result.run_id

    with dg.DagsterInstance.get() as instance:
        materialize(instance, *WARM_UP)
        imported_mb = peak_rss_mb()
        timed = [timed_run(instance, materialize, date(year, 1, 1), days) for year in YEARS]
        partitions = len(instance.get_materialized_partitions(key))
        storage = type(instance.event_log_storage).__name__
    shutil.rmtree(home, ignore_errors=True)
    expected = len(YEARS) * days + (WARM_UP[1] - WARM_UP[0]).days + 1
    if partitions != expected or any(t["materializations"] != days for t in timed):
        raise RuntimeError(f"{arm}: {partitions} materialized partitions, expected {expected}")
    best = min(timed, key=lambda t: t["wall_s"])
    return best | {
        "arm": arm,
        "storage": storage,
        "walls_s": [t["wall_s"] for t in timed],
        "peak_mb": peak_rss_mb(),
        "peak_after_warm_up_mb": imported_mb,
    }


def timed_run(
    instance: Any, materialize: Callable[[Any, date, date], str], first: date, days: int
) -> dict[str, Any]:
    """One range run from ``first``: wall time, events stored, time inside event writes."""
    import dagster as dg

    timer = WriteTimer(instance.event_log_storage)
    started = time.perf_counter()
    run_id = materialize(instance, first, first + timedelta(days=days - 1))
    wall = time.perf_counter() - started
    timer.restore()
    return {
        "wall_s": wall,
        "events": len(instance.all_logs(run_id)),
        "materializations": len(
            instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        ),
        "written_events": timer.events,
        "write_calls": timer.calls,
        "write_s": timer.seconds,
    }


def create_database() -> str:
    import sqlalchemy as sa

    name = f"pulse_event_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def drop_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def print_table(results: list[dict[str, Any]], days: int) -> None:
    base = results[0]
    print(
        f"single-run backfill of raw/market_prices, {days} daily partitions from "
        f"{', '.join(f'{year}-01-01' for year in YEARS)} (real S&P 500 rows; best of "
        f"{len(YEARS)} runs per arm, all walls: "
        + "; ".join(f"{r['arm']} {', '.join(f'{w:.2f}' for w in r['walls_s'])} s" for r in results)
        + ")"
    )
    print(
        f"{'arm':<17} {'wall s':>7} {'events':>7} {'event writes s':>15} {'calls':>6} "
        f"{'ms/partition':>13} {'wall ratio':>11} {'writes ratio':>13} {'peak MiB':>9}"
    )
    for r in results:
        print(
            f"{r['arm']:<17} {r['wall_s']:>7.2f} {r['events']:>7} {r['write_s']:>15.2f} "
            f"{r['write_calls']:>6} {1000 * r['write_s'] / days:>13.2f} "
            f"{r['wall_s'] / base['wall_s']:>10.2f}x {r['write_s'] / base['write_s']:>12.2f}x "
            f"{r['peak_mb']:>9.0f}"
        )
    print(
        "ms/partition: event-storage write time per partition; ratios against sqlite; "
        "peak MiB: the arm's process (after imports and the warm-up week: "
        + ", ".join(f"{r['peak_after_warm_up_mb']:.0f}" for r in results)
        + ")"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--phase", choices=sorted(ARMS))
    parser.add_argument("--database", default="")
    args = parser.parse_args()
    if args.phase:
        report(phase(args.phase, args.days, args.batch_size, args.database))
        return
    database = create_database()
    try:
        common = ("--days", str(args.days), "--batch-size", str(args.batch_size))
        results = [run_phase(Path(__file__), arm, *common, "--database", database) for arm in ARMS]
    finally:
        drop_database(database)
    print_table(results, args.days)


if __name__ == "__main__":
    main()
