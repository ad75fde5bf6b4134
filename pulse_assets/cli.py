"""Command line: ``python -m pulse_assets.cli demo`` runs the whole loop on the embedded default."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import polars as pl

from pulse_assets.config import REPO_ROOT, Settings, load_settings, pulse_home, store_root
from pulse_assets.definitions import build_definitions, build_resources
from pulse_assets.defs.evaluation import SCOREBOARD_KEY
from pulse_assets.defs.jobs import DRIFT_JOB, EVALUATE_JOB, MAIN_JOB, RULES_JOB, SCOREBOARD_JOB
from pulse_assets.defs.partitions import daily_partitions, range_tags, round_partitions
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.defs.training import RETRAIN_JOB
from pulse_assets.errors import PulseError

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
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
        f"    {key:<{width}}  {describe_materialization(meta)}"
        for key, meta in sorted(by_asset.items())
    ]


class Progress:
    """Prints, every few seconds while a run goes on, the steps it finished and the rounds it
    trained or retrodicted (their observations), read from the instance's event log."""

    def __init__(self, instance: dg.DagsterInstance, run_id: str, every_s: float = 5.0) -> None:
        self._instance, self._run_id, self._every_s = instance, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._started = time.perf_counter()
        self._reported: set[str] = set()
        self._rounds = 0

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._report()  # what finished since the last look

    def _watch(self) -> None:
        while not self._stop.wait(self._every_s):
            self._report()

    def _report(self) -> None:
        kinds = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.ASSET_OBSERVATION}
        records = self._instance.get_records_for_run(self._run_id, of_type=kinds).records
        done = [
            r.event_log_entry.step_key
            for r in records
            if r.event_log_entry.is_dagster_event
            and r.event_log_entry.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
        ]
        rounds = len(records) - len(done)
        new = [step for step in done if step and step not in self._reported]
        elapsed = time.perf_counter() - self._started
        for step in new:
            print(f"    {elapsed:5.0f} s  {step.replace('__', '/')} done", flush=True)
        if rounds > self._rounds:
            print(f"    {elapsed:5.0f} s  {rounds} round(s) done", flush=True)
        self._reported.update(s for s in new if s)
        self._rounds = rounds


def _step(
    title: str,
    settings: Settings,
    instance: dg.DagsterInstance,
    job_name: str,
    tags: dict[str, str],
    assets: list[dg.AssetKey] | None = None,
) -> dg.ExecuteInProcessResult:
    print(f"\n{title} ...", flush=True)
    started = time.perf_counter()
    job = build_definitions(settings).resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    with Progress(instance, run_id):
        result = job.execute_in_process(
            instance=instance,
            tags=tags,
            run_config=QUIET_CONSOLE,
            asset_selection=assets,
            run_id=run_id,
        )
    print(f"    done in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    return result


def scoreboard_report(settings: Settings, instance: dg.DagsterInstance) -> list[str]:
    """The walk-forward's scoreboard, read back through the asset graph and the registry."""
    defs = build_definitions(settings)
    table = defs.load_asset_value(SCOREBOARD_KEY, instance=instance)
    if not isinstance(table, pl.DataFrame):
        raise PulseError(f"the scoreboard asset holds {type(table).__name__}, not a frame")
    event = instance.get_latest_materialization_event(SCOREBOARD_KEY)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    versions = build_resources(settings)["registry"].get().versions()
    drift_retrains = sum(v.tags.get("trigger") == "drift" for v in versions)
    lines = [
        f"scoreboard over {meta['span'].value} ({meta['out_of_sample_days'].value} out-of-sample "
        f"days, {meta['rounds'].value} {settings.rounds.cadence} rounds, "
        f"{meta['promotions'].value} promotions, {len(versions)} versions, "
        f"{drift_retrains} drift retrains):",
        f"  {'forecaster':<18} {'RMSE':>9} {'MAE':>9} {'QLIKE':>8} {'U2':>6} {'days':>5}  "
        "champion vs it (DM, squared loss)",
    ]
    for row in table.iter_rows(named=True):
        test = (
            f"DM {row['champion_dm_statistic']:+.2f}, p {row['champion_dm_p_value']:.3g}"
            if row["champion_dm_p_value"] is not None
            else ""
        )
        lines.append(
            f"  {row['forecaster']:<18} {row['rmse']:>9.6f} {row['mae']:>9.6f} "
            f"{row['qlike']:>8.3f} {row['theil_u2']:>6.3f} {row['days']:>5}  {test}"
        )
    lines.append(f"  verdict: {meta['verdict'].value}")
    return lines


def rules_report(settings: Settings) -> list[str]:
    repository = build_resources(settings)["sql_store"].rules()
    active = repository.search(status="active", limit=100).items
    everything = repository.search(limit=1000).total
    evaluations = repository.evaluations()
    lines = [f"rules: {everything} stored, {len(evaluations)} evaluations, {len(active)} active"]
    for record in active:
        figures = repository.evaluations(record.rule_id)[0]
        lines.append(f"  {record.definition}")
        lines.append(
            f"    [{record.source}, {record.confidence}] RMSE improvement {figures['metrics']['improvement']:+.3g} "
            f"on {figures['window_start']}..{figures['window_end']}, 95% CI [{figures['ci_low']:+.3g}, "
            f"{figures['ci_high']:+.3g}], fired on {figures['fired_rows']} of {figures['rows']} windows"
        )
    if not active:
        lines.append(f"  none passed: {_why_no_rule(evaluations)}")
    return lines


def _why_no_rule(evaluations: list[dict]) -> str:
    if not evaluations:
        return "no candidate was mined (no error pattern passed the FDR control) and no LLM was configured"
    fired = [e for e in evaluations if e["fired_rows"] > 0]
    silent = len(evaluations) - len(fired)
    parts = [f"{len(evaluations)} candidate(s) evaluated on the later windows"]
    if silent:
        parts.append(f"{silent} never fired there")
    if fired:
        best = max(fired, key=lambda e: e["ci_low"])
        parts.append(
            f"the best lower bound of an RMSE-improvement interval was {best['ci_low']:+.3g} "
            "(a rule needs it above zero)"
        )
    return "; ".join(parts)


def run_demo() -> int:
    settings = load_settings()
    home = pulse_home()
    prepare_dagster_home(home)
    days = daily_partitions(settings.partitions).get_partition_keys()
    rounds = round_partitions(settings).get_partition_keys()
    print(f"PULSE_HOME={home}")
    with dg.DagsterInstance.get() as instance:
        result = _step(
            f"1/6 ingest and features: {MAIN_JOB} over {days[0]}..{days[-1]} in one run",
            settings,
            instance,
            MAIN_JOB,
            range_tags(days[0], days[-1]),
        )
        print("\n".join(summarize(result)))
        round_range = range_tags(rounds[0], rounds[-1])
        _step(
            f"2/6 the walk-forward: {RETRAIN_JOB} over {len(rounds)} {settings.rounds.cadence} "
            f"rounds {rounds[0]}..{rounds[-1]} (champion decided, challenger trained, each round)",
            settings,
            instance,
            RETRAIN_JOB,
            round_range | {TRIGGER_TAG: "manual"},
        )
        _step(
            f"3/6 retrodiction of every round: {EVALUATE_JOB} (champion of the day, shadow, baselines)",
            settings,
            instance,
            EVALUATE_JOB,
            round_range,
        )
        drift_first = days[-settings.drift.window_days]
        _step(
            f"4/6 drift checks over {drift_first}..{days[-1]}: {DRIFT_JOB}",
            settings,
            instance,
            DRIFT_JOB,
            range_tags(drift_first, days[-1]),
        )
        _step(f"5/6 the rule loop: {RULES_JOB}", settings, instance, RULES_JOB, {})
        _step(f"6/6 the scoreboard: {SCOREBOARD_JOB}", settings, instance, SCOREBOARD_JOB, {})
        print("\n" + "\n".join(scoreboard_report(settings, instance)))
    print("\n" + "\n".join(rules_report(settings)))
    print(f"\nstore: {store_root(settings)}")
    print(
        "see it all: make ui (Dagster, http://127.0.0.1:3000), make mlflow-ui (MLflow, http://127.0.0.1:5000)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the whole loop over the configured window")
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
