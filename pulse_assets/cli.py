"""Command line: ``python -m pulse_assets.cli demo`` runs the whole loop on the embedded default."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from pulse_assets.config import REPO_ROOT, Settings, load_settings, pulse_home, store_root
from pulse_assets.definitions import build_definitions, build_resources
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.jobs import EVALUATE_JOB, MAIN_JOB, RULES_JOB
from pulse_assets.defs.partitions import daily_partitions, range_tags
from pulse_assets.defs.tags import TRIGGER_TAG
from pulse_assets.defs.training import RETRAIN_JOB
from pulse_assets.errors import PulseError
from pulse_assets.metrics.regression import METRIC_NAMES
from pulse_assets.training.registry import CHAMPION

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
    result = job.execute_in_process(
        instance=instance, tags=tags, run_config=QUIET_CONSOLE, asset_selection=assets
    )
    print(f"    done in {time.perf_counter() - started:.1f} s (run {result.run_id})")
    return result


def _scores(settings: Settings, version: str, scope: str, first: str | None = None) -> dict:
    registry_name = settings.training.tracking.model_name
    records = (
        build_resources(settings)["sql_store"].metrics().history(registry_name, version, scope)
    )
    if first is not None:
        records = [r for r in records if r.window_start.isoformat() == first]
    scores: dict = {}
    for record in records[-len(METRIC_NAMES) * len(settings.training.labels) :]:
        entry = scores.setdefault(record.label, {"model": {}, "naive": {}})
        entry["model"][record.metric] = record.value
        entry["naive"][record.metric] = record.naive_value
    return scores


def _metric_lines(title: str, scores: dict) -> list[str]:
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
        lines.append(f"    -> {verdict} the naive persistence forecast on rmse")
    return lines


def model_report(settings: Settings, first: str, last: str) -> list[str]:
    """What the demo trained and how it did, read back from the registry and the metrics store."""
    registry = build_resources(settings)["registry"].get()
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise PulseError(
            "the demo finished without a champion model; see the retrain run in make ui"
        )
    lines = [
        f"champion: {registry.model_name} version {champion.version} "
        f"(trained on {champion.tags.get('partition_range')}, holdout {champion.tags.get('holdout_range')})"
    ]
    lines += _metric_lines(
        "validation (latest 20% of the training rows)",
        _scores(settings, champion.version, "validation"),
    )
    lines += _metric_lines("holdout", _scores(settings, champion.version, "holdout"))
    lines += _metric_lines(
        f"retrodiction {first}..{last}", _scores(settings, champion.version, "retrodiction", first)
    )
    return lines


def rules_report(settings: Settings, first: str) -> list[str]:
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
    registry = build_resources(settings)["registry"].get()
    champion = registry.alias(CHAMPION)
    adjusted = _scores(settings, champion.version, "retrodiction_with_rules", first)
    raw = _scores(settings, champion.version, "retrodiction", first)
    for label in adjusted:
        lines.append(
            f"  rule-adjusted retrodiction from {first}: {label} rmse {adjusted[label]['model']['rmse']:.5g} "
            f"against {raw[label]['model']['rmse']:.5g} for the model alone"
        )
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
    keys = daily_partitions(settings.partitions).get_partition_keys()
    first, last = keys[0], keys[-1]
    holdout_first = keys[-settings.training.holdout_days]
    print(f"PULSE_HOME={home}")
    with dg.DagsterInstance.get() as instance:
        result = _step(
            f"1/5 ingest and features: {MAIN_JOB} over {first}..{last} in one run",
            settings,
            instance,
            MAIN_JOB,
            range_tags(first, last),
        )
        print("\n".join(summarize(result)))
        _step(
            f"2/5 train, register, promote: {RETRAIN_JOB}",
            settings,
            instance,
            RETRAIN_JOB,
            {TRIGGER_TAG: "manual"},
        )
        _step(
            f"3/5 retrodiction and drift backfill: {EVALUATE_JOB} over {holdout_first}..{last}",
            settings,
            instance,
            EVALUATE_JOB,
            range_tags(holdout_first, last),
        )
        rules = _step(
            f"4/5 the rule loop: {RULES_JOB} (propose, evaluate, promote)",
            settings,
            instance,
            RULES_JOB,
            {},
        )
        evaluation_first = str(
            rules.asset_materializations_for_node("rules__rule_evaluations")[0]
            .metadata["evaluation_windows"]
            .value
        ).split("...")[0]
        _step(
            f"5/5 rule-adjusted retrodiction over {evaluation_first}..{last}",
            settings,
            instance,
            EVALUATE_JOB,
            range_tags(evaluation_first, last),
            assets=[RETRODICTION_KEY],
        )
    print("\n" + "\n".join(model_report(settings, holdout_first, last)))
    print("\n" + "\n".join(rules_report(settings, evaluation_first)))
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
