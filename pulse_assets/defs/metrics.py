"""The metrics layer by round: ``metrics/model_metrics`` (the plan's RecursiveTrainingMetrics
recorded in its MetricsStore)."""

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.curriculum.charts import ablation_chart
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.metadata import (
    embedded_charts,
    frame_metadata,
    markdown_table,
    rounded,
    versioned_output,
)
from pulse_assets.defs.partitions import round_partitions
from pulse_assets.defs.resources import SqlStoreResource
from pulse_assets.defs.training import round_windows
from pulse_assets.metrics.recursive import RecursiveMetricsSettings
from pulse_assets.metrics.rounds import (
    CUMULATIVE,
    CURRICULUM,
    ROUND,
    RULES,
    RoundMetrics,
    round_metrics,
)
from pulse_assets.metrics.store import MetricsStore
from pulse_assets.training.rounds import RoundWindow

METRICS_KEY = dg.AssetKey(["metrics", "model_metrics"])
RULE_IMPACT_KEY = dg.AssetKey(["rules", "rule_impact"])
HORIZON_YEARS = 10
FRAME_DESCRIPTIONS = {
    "date": "the round's first day",
    "scope": "round: the round's days; cumulative: every day from the first round through it",
    "subject": "a forecaster (champion, challenger_shadow, a baseline), rules, or curriculum "
    "(each challenger against its uniform-weight twin)",
    "metric": "rmse, mae, qlike, theil_u2, dm_<statistic|p>_vs_<baseline>_<loss>, "
    "skill_vs_best_baseline, trust_delta[_ci_low|_ci_high], alignment_<figure>, "
    "curriculum: weighted_mse, uniform_mse, mse_difference (weighted - uniform), "
    "relative_difference, effect_dm_<statistic|p>, weighted_days",
    "value": "the figure; null where undefined (see note)",
    "days": "days the figure is computed over",
    "note": "why a figure is undefined, or the best baseline / the rules' outcome",
}
RECURSIVE_METRICS: tuple[str, ...] = (
    "skill_vs_best_baseline",
    "mse",
    "best_baseline_mse",
    "trust_delta",
    "trust_delta_ci_low",
    "trust_delta_ci_high",
)


def since_first_round(
    round_defs: dg.TimeWindowPartitionsDefinition,
) -> dg.TimeWindowPartitionMapping:
    """Round R reads every round from the first through R: an offset back past the first round
    from any round that can exist (all rounds up to ``partitions.end``, or the next
    ``HORIZON_YEARS`` years of rounds when the span is open; definitions are reloaded far more
    often). Rounds before the first do not exist and are left out.

    Dagster lineage, not the metrics store's history: the cumulative DM test needs every day's
    errors (the store holds aggregates), and re-running an early round's retrodiction then marks
    every later round's cumulative figures stale."""
    horizon = datetime.now(UTC) + timedelta(days=366 * HORIZON_YEARS)
    count = len(round_defs.get_partition_keys(current_time=horizon))
    return dg.TimeWindowPartitionMapping(
        start_offset=-count, end_offset=0, allow_nonexistent_upstream_partitions=True
    )


def _previous_round(round_defs: dg.TimeWindowPartitionsDefinition, key: str) -> str | None:
    window = round_defs.time_window_for_partition_key(key)
    previous = round_defs.get_prev_partition_window(window.start)
    return (
        round_defs.get_partition_key_for_timestamp(previous.start.timestamp()) if previous else None
    )


def _store_figures(
    frame: pl.DataFrame, scope: str, subject: str, metrics: tuple[str, ...] | None = None
) -> tuple[dict[str, float], dict[str, float], int]:
    """One scope's figures of a round's long frame, the naive forecaster's beside them (NaN
    where naive has none), and the days they cover."""
    rows = frame.filter((pl.col("scope") == scope) & (pl.col("subject") == subject))
    if metrics is not None:
        rows = rows.filter(pl.col("metric").is_in(list(metrics)))
    naive = frame.filter((pl.col("scope") == scope) & (pl.col("subject") == "naive"))
    naive_of = dict(zip(naive["metric"], naive["value"], strict=True))
    model = {
        m: float("nan") if v is None else v
        for m, v in zip(rows["metric"], rows["value"], strict=True)
    }
    paired = {m: naive_of.get(m) for m in model}
    days = [int(d) for d in rows.get_column("days").drop_nulls().to_list()]
    return (
        model,
        {m: float("nan") if v is None else v for m, v in paired.items()},
        max(days, default=0),
    )


def _record(
    store: MetricsStore,
    model_name: str,
    label: str,
    window: RoundWindow,
    versions: str,
    metrics: RoundMetrics,
    run_id: str,
) -> None:
    """The round's cumulative figures per forecaster (``cumulative:<forecaster>``), the
    champion's skill and trust delta (``recursive:champion``), symbolic alignment
    (``recursive:rules``) and the curriculum's effect over the round and cumulatively
    (``recursive:curriculum``, ``cumulative:curriculum``). Its per-round figures are recorded by ``evaluation/retrodiction``."""
    frame = metrics.to_frame()
    scopes: list[tuple[str, str, str, tuple[str, ...] | None]] = [
        (f"cumulative:{name}", CUMULATIVE, name, None)
        for name in metrics.cumulative_skill.get_column("forecaster").to_list()
    ]
    scopes.append(("recursive:champion", ROUND, "champion", RECURSIVE_METRICS))
    if metrics.alignment is not None:
        scopes.append(("recursive:rules", ROUND, RULES, None))
    scopes.append(("recursive:curriculum", ROUND, CURRICULUM, None))
    scopes.append(("cumulative:curriculum", CUMULATIVE, CURRICULUM, None))
    for scope, kind, subject, names in scopes:
        model, naive, days = _store_figures(frame, kind, subject, names)
        store.record(
            model_name=model_name,
            model_version=versions,
            scope=scope,
            window=(window.start, window.end - timedelta(days=1)),
            label=label,
            metrics={"model": model, "naive": naive},
            rows=days,
            run_id=run_id,
        )


def _run_metadata(frames: list[pl.DataFrame], last: RoundMetrics) -> dict[str, Any]:
    frame = pl.concat(frames)
    latest = frame.filter(pl.col("round") == last.round)
    headline = latest.filter(
        pl.col("metric").is_in(["rmse", "qlike", "trust_delta"]) | (pl.col("subject") == RULES)
    )
    metadata = frame_metadata(frame, descriptions=FRAME_DESCRIPTIONS) | {
        "rounds": frame.get_column("round").n_unique(),
        "latest_round": last.round,
        "cumulative_since": last.first_round,
        "latest_trust_delta": (
            f"{last.trust.delta:+.4g} [{last.trust.ci_low:+.4g}, {last.trust.ci_high:+.4g}]"
            if last.trust
            else str(last.trust_note)
        ),
        "latest_alignment": last.alignment.outcome if last.alignment else "rule impact not wired",
        "latest_curriculum_effect": last.curriculum.outcome,
        "curriculum_effect_since_first_round": last.cumulative_curriculum.outcome,
        "latest": markdown_table(
            headline.drop("date", "round").with_columns(pl.col("value").round_sig_figs(4)),
            max_rows=60,
        ),
    }
    effect = last.cumulative_curriculum.result
    if effect is not None:  # each round's challenger against its uniform twin, per round
        with tempfile.TemporaryDirectory(prefix="pulse-chart-") as folder:
            metadata |= embedded_charts(
                [ablation_chart(effect, Path(folder) / "curriculum_effect.png")]
            )
    return metadata


def build_metrics_assets(
    settings: Settings,
    rule_impact_key: dg.AssetKey | None = None,
    options: RecursiveMetricsSettings | None = None,
) -> list[dg.AssetsDefinition]:
    """``metrics/model_metrics``; with ``rule_impact_key`` (``RULE_IMPACT_KEY`` once the rule
    loop builds it) it also reads that asset's round and reports symbolic alignment."""
    label = settings.training.labels[0]
    model_name = settings.training.tracking.model_name
    options = options or RecursiveMetricsSettings()
    round_defs = round_partitions(settings)
    ins = {
        "retrodiction": dg.AssetIn(
            RETRODICTION_KEY, partition_mapping=since_first_round(round_defs)
        )
    }
    if rule_impact_key is not None:
        ins["rule_impact"] = dg.AssetIn(rule_impact_key)

    def compute(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        rule_impact: pl.DataFrame | None,
        sql_store: SqlStoreResource,
    ) -> dg.Output[pl.DataFrame]:
        store = sql_store.metrics()
        frames, computed = [], []
        for window in round_windows(round_defs, list(context.partition_keys)):
            metrics = round_metrics(
                retrodiction,
                label,
                window.key,
                _previous_round(round_defs, window.key),
                rule_impact,
                options,
            )
            own = retrodiction.filter(pl.col("round") == window.key)
            versions = ",".join(sorted(own.get_column("model_version").unique().to_list()))
            _record(store, model_name, label, window, versions, metrics, context.run.run_id)
            context.log_event(
                dg.AssetObservation(
                    asset_key=METRICS_KEY, partition=window.key, metadata=rounded(metrics.figures())
                )
            )
            frames.append(metrics.to_frame())
            computed.append(metrics)
        frame = pl.concat(frames)
        return versioned_output(frame, _run_metadata(frames, computed[-1]))

    common: dict[str, Any] = {
        "key": METRICS_KEY,
        "group_name": "metrics",
        "description": (
            "Per round: every forecaster's RMSE, MAE, QLIKE and Theil's U2 over the round and "
            "cumulatively (first round through this one), the champion's Diebold-Mariano tests "
            "against each baseline (squared and absolute loss), its skill against the best "
            "baseline and the trust delta from the previous round (block-bootstrap interval), "
            "symbolic alignment of the active rules when rule impact is wired, and the "
            "curriculum's effect (each challenger against its uniform-weight twin, out of "
            "sample, DM test). Recorded in the metrics store (model_metrics: "
            "cumulative:<forecaster>, recursive:champion, recursive:rules, "
            "recursive:curriculum, cumulative:curriculum)."
        ),
        "ins": ins,
        "partitions_def": round_defs,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "automation_condition": dg.AutomationCondition.eager(),
        "kinds": {"parquet"},
    }
    if rule_impact_key is None:

        @dg.asset(**common)
        def model_metrics(
            context: dg.AssetExecutionContext,
            retrodiction: pl.DataFrame,
            sql_store: SqlStoreResource,
        ) -> dg.Output[pl.DataFrame]:
            return compute(context, retrodiction, None, sql_store)

        return [model_metrics]

    @dg.asset(**common)
    def model_metrics_with_rules(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        rule_impact: pl.DataFrame,
        sql_store: SqlStoreResource,
    ) -> dg.Output[pl.DataFrame]:
        return compute(context, retrodiction, rule_impact, sql_store)

    return [model_metrics_with_rules]
