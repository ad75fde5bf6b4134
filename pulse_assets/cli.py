"""Command line: ``python -m pulse_assets.cli demo`` runs the main job over the whole window."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from pulse_assets.config import REPO_ROOT, load_settings, pulse_home, store_root
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


def _summary_rows(result) -> list[tuple[str, str]]:  # noqa: ANN001 (dagster result type is private)
    first_event: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        key = materialization.asset_key.to_user_string()
        first_event.setdefault(key, {k: v.value for k, v in materialization.metadata.items()})
    rows = []
    for key, meta in sorted(first_event.items()):
        line = f"{meta.get('dagster/row_count', '?')} rows, {meta.get('first_date')}..{meta.get('last_date')}"
        if "quarantined_rows" in meta:
            line += f", {meta['quarantined_rows']} quarantined"
        if "feature_columns" in meta:
            line += f", {meta['feature_columns']} feature columns, {meta['warmup_rows_dropped']} warm-up rows"
        if "labels_known" in meta:
            line += f", {meta['labels_known']} with every label known"
        rows.append((key, line))
    return rows


def run_demo(first: str | None, last: str | None) -> int:
    import dagster as dg

    from pulse_assets.definitions import build_definitions
    from pulse_assets.defs.jobs import MAIN_JOB
    from pulse_assets.defs.partitions import daily_partitions, range_tags

    settings = load_settings()
    home = pulse_home()
    prepare_dagster_home(home)
    keys = daily_partitions(settings.partitions).get_partition_keys()
    first, last = first or keys[0], last or keys[-1]
    print(f"PULSE_HOME={home}\nmaterializing {MAIN_JOB} over {first}..{last} in one run ...")
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        job = build_definitions(settings).resolve_job_def(MAIN_JOB)
        result = job.execute_in_process(
            instance=instance, tags=range_tags(first, last), run_config=QUIET_CONSOLE
        )
    elapsed = time.perf_counter() - started
    width = max(len(key) for key, _ in _summary_rows(result))
    print(f"\nrun {result.run_id} succeeded in {elapsed:.1f} s")
    for key, line in _summary_rows(result):
        print(f"  {key:<{width}}  {line}")
    print(f"\nstore: {store_root(settings)}\nsee it all: make ui  (http://127.0.0.1:3000)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the main job over the configured window")
    demo.add_argument("--first", help="first partition key (default: the window's first day)")
    demo.add_argument("--last", help="last partition key (default: the window's last day)")
    commands.add_parser("home", help="print PULSE_HOME")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="dagster")
    try:
        if args.command == "home":
            print(pulse_home())
            return 0
        return run_demo(args.first, args.last)
    except PulseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
