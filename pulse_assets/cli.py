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
from pulse_assets.definitions import build_definitions, build_resources
from pulse_assets.defs.jobs import EVALUATE_JOB, MAIN_JOB
from pulse_assets.defs.partitions import daily_partitions, range_tags
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.defs.training import RETRAIN_JOB
from pulse_assets.errors import PulseError
from pulse_assets.metrics.regression import METRIC_NAMES
from pulse_assets.training.registry import CHAMPION

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


def _run(job_name: str, settings, instance, tags: dict[str, str]) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def(job_name)
    return job.execute_in_process(instance=instance, tags=tags, run_config=QUIET_CONSOLE)


def _metric_table(title: str, scores: dict) -> list[str]:
    lines = [f"  {title}"]
    for label, figures in scores.items():
        model, naive = figures["model"], figures["naive"]
        lines.append(
            f"    {label}: "
            + ", ".join(
                f"{name} {model[name]:.5g} (naive {naive[name]:.5g})"
                for name in ("rmse", "mae", "theil_u2")
            )
        )
        verdict = "beats" if model["rmse"] < naive["rmse"] else "does NOT beat"
        lines.append(f"    the model {verdict} the naive persistence forecast on rmse")
    return lines


def run_demo() -> int:
    settings = load_settings()
    home = pulse_home()
    prepare_dagster_home(home)
    keys = daily_partitions(settings.partitions).get_partition_keys()
    first, last = keys[0], keys[-1]
    last_year = keys[-365]
    print(f"PULSE_HOME={home}")
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        print(f"1/3 ingest and features: {MAIN_JOB} over {first}..{last} in one run ...")
        result = _run(MAIN_JOB, settings, instance, range_tags(first, last))
        print(f"    done in {time.perf_counter() - started:.1f} s")
        print("\n".join(summarize(result)))

        started = time.perf_counter()
        print(f"\n2/3 train, register, promote: {RETRAIN_JOB} ...")
        _run(RETRAIN_JOB, settings, instance, {TRIGGER_TAG: "manual"})
        print(f"    done in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        print(
            f"\n3/3 retrodiction and drift over the last year: {EVALUATE_JOB} over {last_year}..{last} ..."
        )
        _run(EVALUATE_JOB, settings, instance, range_tags(last_year, last))
        print(f"    done in {time.perf_counter() - started:.1f} s")
    print("\n" + "\n".join(model_report(settings, last_year, last)))
    print(f"\nstore: {store_root(settings)}")
    print(
        "see it all: make ui (Dagster, http://127.0.0.1:3000), make mlflow-ui (MLflow, http://127.0.0.1:5000)"
    )
    return 0


def model_report(settings, first: str, last: str) -> list[str]:
    """What the demo trained and how it did, read back from the registry and the metrics store."""
    resources = build_resources(settings)
    registry = resources["registry"].get()
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise PulseError(
            "the demo finished without a champion model; see the retrain run in make ui"
        )
    metrics = resources["sql_store"].metrics()
    lines = [
        f"champion: {registry.model_name} version {champion.version} "
        f"(trained on {champion.tags.get('partition_range')}, holdout {champion.tags.get('holdout_range')})"
    ]
    for scope, title in (
        ("validation", "validation"),
        ("holdout", "holdout (held-out year)"),
        ("retrodiction", f"retrodiction {first}..{last}"),
    ):
        records = [r for r in metrics.history(registry.model_name, champion.version, scope)]
        if scope == "retrodiction":
            records = [r for r in records if r.window_start.isoformat() == first]
        scores: dict = {}
        for record in records[-len(METRIC_NAMES) * len(settings.training.labels) :]:
            entry = scores.setdefault(record.label, {"model": {}, "naive": {}})
            entry["model"][record.metric] = record.value
            entry["naive"][record.metric] = record.naive_value
        lines += _metric_table(title, scores)
    return lines


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
