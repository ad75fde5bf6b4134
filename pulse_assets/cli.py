"""Command line: ``python -m pulse_assets.cli demo`` runs the main job over the whole window."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from pulse_assets.config import REPO_ROOT, load_settings, pulse_home, store_root
from pulse_assets.definitions import build_definitions
from pulse_assets.defs.jobs import MAIN_JOB
from pulse_assets.defs.partitions import daily_partitions, range_tags
from pulse_assets.errors import PulseError

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
PLANNED_EVENTS_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def prepare_dagster_home(home: Path) -> Path:
    """``$PULSE_HOME/dagster`` with the repository's dagster.yaml: shared by demo and UI.

    A single run over thousands of daily partitions otherwise writes one "planned" event per
    partition and asset before the first step starts (about a minute on SQLite for the demo);
    with this setting Dagster writes one per asset (a failed run then does not mark each
    partition failed, only the run).
    """
    os.environ.setdefault(PLANNED_EVENTS_ENV, "1")
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home


def describe_materialization(metadata: dict) -> str:
    """One line per asset: rows, time range, and what the asset adds (quarantine, features)."""
    parts = [
        f"{metadata['dagster/row_count']} rows, {metadata['first_date']}..{metadata['last_date']}"
    ]
    if "quarantined_rows" in metadata:
        parts.append(f"{metadata['quarantined_rows']} quarantined")
    if "feature_columns" in metadata:
        parts.append(f"{metadata['feature_columns']} feature columns")
        parts.append(f"{metadata['warmup_rows_dropped']} warm-up rows dropped")
    if "labels_known" in metadata:
        parts.append(f"{metadata['labels_known']} with every label known")
    return ", ".join(parts)


def summarize(result: dg.ExecuteInProcessResult) -> list[str]:
    """A range run stores the same metadata on each partition's event: read one per asset."""
    by_asset: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        by_asset.setdefault(
            materialization.asset_key.to_user_string(),
            {key: value.value for key, value in materialization.metadata.items()},
        )
    width = max(len(key) for key in by_asset)
    return [
        f"  {key:<{width}}  {describe_materialization(meta)}"
        for key, meta in sorted(by_asset.items())
    ]


def run_demo() -> int:
    settings = load_settings()
    home = pulse_home()
    prepare_dagster_home(home)
    keys = daily_partitions(settings.partitions).get_partition_keys()
    first, last = keys[0], keys[-1]
    print(f"PULSE_HOME={home}\nmaterializing {MAIN_JOB} over {first}..{last} in one run ...")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(MAIN_JOB)
        result = job.execute_in_process(
            instance=instance, tags=range_tags(first, last), run_config=QUIET_CONSOLE
        )
    elapsed = time.perf_counter() - started
    print(f"\nrun {result.run_id} succeeded in {elapsed:.1f} s")
    print("\n".join(summarize(result)))
    print(f"\nstore: {store_root(settings)}\nsee it all: make ui  (http://127.0.0.1:3000)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the main job over the whole configured window")
    commands.add_parser("home", help="print PULSE_HOME")
    args = parser.parse_args(argv)
    try:
        if args.command == "home":
            print(pulse_home())
            return 0
        return run_demo()
    except PulseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
