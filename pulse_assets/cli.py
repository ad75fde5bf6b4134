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

from pulse_assets.config import (
    Settings,
    instance_yaml_path,
    load_settings,
    pulse_home,
    store_root,
)
from pulse_assets.curriculum.ablation import ablation
from pulse_assets.definitions import build_assets, build_definitions, build_resources
from pulse_assets.defs.evaluation import RETRODICTION_KEY, SCOREBOARD_KEY
from pulse_assets.defs.jobs import (
    DRIFT_JOB,
    EVALUATE_JOB,
    MAIN_JOB,
    METRICS_JOB,
    RULE_GAINS_JOB,
    RULES_JOB,
    SCOREBOARD_JOB,
)
from pulse_assets.defs.partitions import daily_partitions, range_tags, round_partitions
from pulse_assets.defs.rules import GAINS_KEY, LOOP_VERDICT
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.defs.training import MODEL_KEY, RETRAIN_JOB
from pulse_assets.errors import PulseError
from pulse_assets.metrics.rounds import CUMULATIVE, CURRICULUM, CURRICULUM_FIGURES, ROUND
from pulse_assets.progress import Countdown
from pulse_assets.rules.impact import gains_from_frame, summary_lines
from pulse_assets.storage import PartitionStore
from pulse_assets.storage.partition_store import UNPARTITIONED_KEY

QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PLANNED_EVENTS_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


def prepare_dagster_home(home: Path) -> Path:
    """``$PULSE_HOME/dagster`` with the instance settings of the selected profile
    (``configs/deploy/$PULSE_PROFILE/dagster.yaml``, or the repository's dagster.yaml when no
    profile is set): shared by demo and UI.

    A single run over thousands of daily partitions otherwise writes one "planned" event per
    partition and asset before the first step starts (about a minute on SQLite for the demo);
    with this setting Dagster writes one per asset (a failed run then does not mark each
    partition failed, only the run).
    """
    os.environ.setdefault(PLANNED_EVENTS_ENV, "1")
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_yaml_path(), dagster_home / "dagster.yaml")
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
    trained or retrodicted (their observations), each as done/total with an ETA, read from the
    instance's event log."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        steps: int,
        rounds: int = 0,
        every_s: float = 5.0,
    ) -> None:
        self._instance, self._run_id, self._every_s = instance, run_id, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._steps = Countdown("steps", steps)
        self._rounds = Countdown("rounds", rounds) if rounds else None
        self._reported: set[str] = set()

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
        new = [step for step in done if step and step not in self._reported]
        for step in new:
            self._steps.advance()
            print(f"    {step.replace('__', '/')} done; {self._steps.line()}", flush=True)
        self._reported.update(new)
        rounds = len(
            {
                r.event_log_entry.dagster_event.partition
                for r in records
                if r.event_log_entry.dagster_event is not None
                and r.event_log_entry.dagster_event_type == dg.DagsterEventType.ASSET_OBSERVATION
            }
        )  # a round may be observed on several assets (the model and its curriculum)
        if self._rounds is not None and rounds > self._rounds.done:
            self._rounds.advance(rounds - self._rounds.done)
            print(f"    {self._rounds.line()}", flush=True)


def _step(
    title: str,
    settings: Settings,
    instance: dg.DagsterInstance,
    job_name: str,
    tags: dict[str, str],
    assets: list[dg.AssetKey] | None = None,
    rounds: int = 0,
) -> dg.ExecuteInProcessResult:
    print(f"\n{title} ...", flush=True)
    started = time.perf_counter()
    job = build_definitions(settings).resolve_job_def(job_name)
    run_id = str(uuid.uuid4())
    steps = len(assets) if assets else len(job.graph.node_dict)
    with Progress(instance, run_id, steps, rounds):
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


ABLATION_TABLES = ("features/daily_features", "features/daily_labels")


def uniform_arm_settings(settings: Settings, home: Path) -> Settings:
    """The same walk-forward with uniform weights (``curriculum.enabled: false``): same data,
    config and seeds, in its own home (store, registry, alias audit, checkpoints)."""
    tracking = settings.training.tracking.model_copy(
        update={
            "uri": f"sqlite:///{home / 'mlflow.db'}",
            "artifacts_uri": str(home / "mlartifacts"),
        }
    )
    training = settings.training.model_copy(
        update={"tracking": tracking, "checkpoints_root": str(home / "checkpoints")}
    )
    return settings.model_copy(
        update={
            "store": settings.store.model_copy(update={"root": str(home / "store")}),
            "sql": settings.sql.model_copy(update={"url": f"sqlite:///{home / 'pulse.db'}"}),
            "training": training,
            "curriculum": settings.curriculum.model_copy(update={"enabled": False}),
        }
    )


def run_uniform_arm(settings: Settings, rounds: Sequence[str], home: Path) -> pl.DataFrame:
    """Train and retrodict ``rounds`` with uniform weights on a copy of the features and
    labels; returns that arm's retrodiction."""
    source = Path(store_root(settings))
    if not source.is_dir():
        raise PulseError(f"the ablation copies a local store's features; {source} is not one")
    arm = uniform_arm_settings(settings, home)
    for table in ABLATION_TABLES:
        shutil.copytree(source / table, Path(arm.store.root or "") / table, dirs_exist_ok=True)
    with dg.DagsterInstance.ephemeral() as instance:
        for key in (MODEL_KEY, RETRODICTION_KEY):
            dg.materialize(
                build_assets(arm),
                selection=[key],
                resources=build_resources(arm),
                instance=instance,
                tags=range_tags(rounds[0], rounds[-1]) | {TRIGGER_TAG: "ablation"},
                run_config=QUIET_CONSOLE,
            )
    return PartitionStore(arm.store.root or "").read("evaluation/retrodiction", rounds)


def arm_errors(retrodiction: pl.DataFrame, label: str) -> pl.DataFrame:
    """``date``, ``round``, ``error``: the champion of the day's out-of-sample errors."""
    return retrodiction.drop_nulls([f"actual_{label}", f"forecast_{label}"]).select(
        "date",
        "round",
        (pl.col(f"forecast_{label}") - pl.col(f"actual_{label}")).alias("error"),
    )


def curriculum_ablation_report(settings: Settings, rounds: Sequence[str], home: Path) -> list[str]:
    label = settings.training.labels[0]
    with_curriculum = PartitionStore(store_root(settings)).read("evaluation/retrodiction", rounds)
    uniform = run_uniform_arm(settings, rounds, home)
    result = ablation(arm_errors(with_curriculum, label), arm_errors(uniform, label))
    return [f"curriculum ablation: {result.verdict}"]


def rules_report(settings: Settings) -> list[str]:
    """The rule loop over the rounds: activations, retirements, gains after activation."""
    store = build_resources(settings)["partition_store"].get()
    rounds = store.keys("rules/rule_state")
    states = store.read("rules/rule_state", rounds)
    gains = gains_from_frame(store.read("rules/rule_gains", [UNPARTITIONED_KEY]))
    return summary_lines(rounds, states, gains, settings.rules.evaluation.confidence)


def metrics_report(settings: Settings, last: int = 3) -> list[str]:
    """Trust delta, symbolic alignment and the curriculum's effect of the last rounds, and the
    curriculum's effect since the first round, from metrics/model_metrics."""
    store = build_resources(settings)["partition_store"].get()
    rounds = store.keys("metrics/model_metrics")[-last:]
    frame = store.read("metrics/model_metrics", rounds)
    lines = [f"the last {len(rounds)} rounds (metrics/model_metrics):"]
    for key in rounds:
        rows = frame.filter((pl.col("round") == key) & (pl.col("scope") == ROUND))
        value = dict(zip(rows["metric"], rows["value"], strict=False))
        notes = dict(zip(rows["metric"], rows["note"], strict=False))
        lines.append(
            f"  {key}: skill vs best baseline {_figure(value.get('skill_vs_best_baseline'))}, "
            f"trust delta {_figure(value.get('trust_delta'))} "
            f"[{_figure(value.get('trust_delta_ci_low'))}, "
            f"{_figure(value.get('trust_delta_ci_high'))}]{_note(notes.get('trust_delta'))}; "
            "symbolic alignment: share toward the actual "
            f"{_figure(value.get('alignment_share_toward'))}"
            f"{_note(notes.get('alignment_share_toward'))}; curriculum vs uniform twin: "
            f"{notes.get(CURRICULUM_FIGURES[0])}"
        )
    cumulative = frame.filter(
        (pl.col("round") == rounds[-1])
        & (pl.col("scope") == CUMULATIVE)
        & (pl.col("subject") == CURRICULUM)
        & (pl.col("metric") == CURRICULUM_FIGURES[0])
    )
    lines.append(
        "each round's challenger against its uniform-weight twin, every round so far: "
        f"{cumulative.get_column('note').item()}"
    )
    return lines


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3g}"


def _note(note: str | None) -> str:
    return f" ({note})" if note else ""


def loop_report(instance: dg.DagsterInstance) -> str:
    """One honest sentence: did the loop beat its first model kept as it was? (rule_gains
    measures it over every round; read from its latest materialization)."""
    event = instance.get_latest_materialization_event(GAINS_KEY)
    if event is None or event.asset_materialization is None:
        raise PulseError("rules/rule_gains is not materialized: run the rule_gains job first")
    return "verdict of the loop: " + str(event.asset_materialization.metadata[LOOP_VERDICT].value)


def run_demo() -> int:
    settings = load_settings()
    home = pulse_home()
    prepare_dagster_home(home)
    days = daily_partitions(settings.partitions).get_partition_keys()
    rounds = round_partitions(settings).get_partition_keys()
    print(f"PULSE_HOME={home}")
    with dg.DagsterInstance.get() as instance:
        result = _step(
            f"1/9 ingest and features: {MAIN_JOB} over {days[0]}..{days[-1]} in one run",
            settings,
            instance,
            MAIN_JOB,
            range_tags(days[0], days[-1]),
        )
        print("\n".join(summarize(result)))
        round_range = range_tags(rounds[0], rounds[-1])
        _step(
            f"2/9 the walk-forward: {RETRAIN_JOB} over {len(rounds)} {settings.rounds.cadence} "
            f"rounds {rounds[0]}..{rounds[-1]} (champion decided, curriculum scored, challenger "
            "trained, each round)",
            settings,
            instance,
            RETRAIN_JOB,
            round_range | {TRIGGER_TAG: "manual"},
            rounds=len(rounds),
        )
        _step(
            f"3/9 retrodiction of every round: {EVALUATE_JOB} (champion of the day, shadow, "
            "baselines; the model's check against the best baseline)",
            settings,
            instance,
            EVALUATE_JOB,
            round_range,
            rounds=len(rounds),
        )
        _step(
            f"4/9 the rule loop over the rounds: {RULES_JOB} (each round decided from the days "
            "before it)",
            settings,
            instance,
            RULES_JOB,
            round_range,
        )
        _step(
            f"5/9 rule gains after activation: {RULE_GAINS_JOB}",
            settings,
            instance,
            RULE_GAINS_JOB,
            {},
        )
        _step(
            f"6/9 metrics of every round: {METRICS_JOB} (skill, DM, trust delta, alignment)",
            settings,
            instance,
            METRICS_JOB,
            round_range,
        )
        drift_first = days[-settings.drift.window_days]
        _step(
            f"7/9 drift checks over {drift_first}..{days[-1]}: {DRIFT_JOB}",
            settings,
            instance,
            DRIFT_JOB,
            range_tags(drift_first, days[-1]),
        )
        _step(f"8/9 the scoreboard: {SCOREBOARD_JOB}", settings, instance, SCOREBOARD_JOB, {})
        print("\n" + "\n".join(scoreboard_report(settings, instance)))
        verdict = loop_report(instance)
    print("\n" + "\n".join(rules_report(settings)))
    print("\n" + "\n".join(metrics_report(settings)))
    print(
        f"\n9/9 the curriculum ablation: the same {len(rounds)} rounds with uniform weights, in "
        f"{home / 'ablation'} ...",
        flush=True,
    )
    started = time.perf_counter()
    print("\n".join(curriculum_ablation_report(settings, rounds, home / "ablation")))
    print(f"    done in {time.perf_counter() - started:.1f} s")
    print("\n" + verdict)
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
