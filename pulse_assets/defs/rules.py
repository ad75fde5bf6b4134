"""The rule loop as round-partitioned assets, strictly after the fact.

``rules/rule_state`` (round R): decided from retrodiction days before R only (its inputs are
the rounds before R) and from R-1's state (its own previous partition): candidates mined,
accepted with a multiple-testing correction, rules in force re-tested and retired, the set
chosen; in force from R. ``rules/rule_impact`` (round R): R's days adjusted by R's rules in
force. ``rules/rule_gains``: the gain of each rule and of the set, on days after activation.

Rule text and LLM prose come from outside: they reach the markdown metadata escaped.
"""

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.features import FEATURES_KEY
from pulse_assets.defs.metadata import (
    embedded_charts,
    escape_markdown,
    frame_metadata,
    markdown_table,
    rounded,
)
from pulse_assets.defs.partitions import round_partitions, rounds_covering
from pulse_assets.defs.resources import READ_EXISTING_ONLY, RegistryResource, SqlStoreResource
from pulse_assets.defs.training import MODEL_KEY, round_windows
from pulse_assets.evaluation.loop_verdict import against_first_model
from pulse_assets.rules.charts import rule_impact_chart
from pulse_assets.rules.impact import (
    GAINS_DESCRIPTIONS,
    gains_frame,
    post_activation_gains,
    rule_impact,
    summary_lines,
)
from pulse_assets.rules.rounds import (
    STATE_DESCRIPTIONS,
    STATE_SCHEMA,
    ActiveRule,
    RoundRun,
    RuleRoundError,
    empty_state,
    history_frame,
    run_round,
)
from pulse_assets.training.rounds import RoundWindow

STATE_KEY = dg.AssetKey(["rules", "rule_state"])
IMPACT_KEY = dg.AssetKey(["rules", "rule_impact"])
GAINS_KEY = dg.AssetKey(["rules", "rule_gains"])
LOOP_VERDICT = "loop_verdict"  # rule_gains metadata: the loop against its first model kept
STATE_TABLE_COLUMNS = ("round", "rule_id", "status", "definition", "reason")


def in_force_markdown(rules: Sequence[ActiveRule]) -> str:
    """One list item per rule in force: id, definition and round of activation, escaped."""
    return (
        "\n".join(
            f"- **{escape_markdown(a.entry.rule_id)}** {escape_markdown(a.entry.definition)} "
            f"(in force from {escape_markdown(str(a.entry.activated_round))})"
            for a in rules
        )
        or "No rule is in force."
    )


def state_table(frame: pl.DataFrame) -> dg.MetadataValue:
    """The activations and retirements of a state frame (``markdown_table`` escapes cells)."""
    changes = frame.filter(pl.col("status").is_in(("activated", "retired")))
    return markdown_table(changes.select(STATE_TABLE_COLUMNS), max_rows=40)


def _previous_state(
    context: dg.AssetExecutionContext,
    previous: pl.DataFrame,
    first: RoundWindow,
    partitions: dg.TimeWindowPartitionsDefinition,
) -> pl.DataFrame:
    """The state of the round before the run's first round: empty before the first round;
    an error when that round's state is not materialized (the loop would restart silently)."""
    if first.key == partitions.get_first_partition_key():
        return empty_state()
    window = partitions.get_prev_partition_window(
        partitions.time_window_for_partition_key(first.key).start
    )
    if window is None:
        return empty_state()
    before = partitions.get_partition_key_for_timestamp(window.start.timestamp())
    if before not in context.instance.get_materialized_partitions(STATE_KEY):
        raise RuleRoundError(
            f"round {first.key} starts from the rule state of round {before}, which is not "
            f"materialized: materialize rules/rule_state from {partitions.get_first_partition_key()} "
            "on first (a backfill of rounds)"
        )
    if previous.height == 0:
        return empty_state()
    return previous.filter(pl.col("round") == before).select(STATE_SCHEMA.names())


def _round_figures(run: RoundRun) -> dict[str, Any]:
    decision = run.decision
    return {
        "outcome": decision.outcome,
        "mining_days": decision.mining,
        "acceptance_days": decision.acceptance,
        "candidates": len(decision.judged),
        "accepted": sum(j.accepted for j in decision.judged),
        "activated": len(decision.activated),
        "retired": sum(not r.kept for r in decision.retention),
        "in_force": len(decision.in_force()),
        "llm": run.proposal.llm.status if run.proposal else "not run: no mining day",
    }


def _state_metadata(runs: list[RoundRun], frame: pl.DataFrame) -> dict[str, Any]:
    last = runs[-1].decision
    return frame_metadata(frame, descriptions=STATE_DESCRIPTIONS) | {
        "rounds": len(runs),
        "rounds_range": f"{runs[0].decision.window.key}...{last.window.key}",
        "candidates_tested": sum(len(r.decision.judged) for r in runs),
        "activations": sum(len(r.decision.activated) for r in runs),
        "retirements": int((frame["status"] == "retired").sum()),
        "rounds_without_candidate": sum(not r.decision.judged for r in runs),
        "last_round_outcome": last.outcome,
        "in_force_in_last_round": dg.MetadataValue.md(in_force_markdown(last.in_force())),
        "activations_and_retirements": state_table(frame),
    }


def build_rule_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    config, labels = settings.rules, settings.training.labels
    partitions = round_partitions(settings)
    before_round = dg.TimeWindowPartitionMapping(
        start_offset=-rounds_covering(config.window_days, settings),
        end_offset=-1,
        allow_nonexistent_upstream_partitions=True,
    )
    evaluation = config.evaluation

    @dg.asset(
        key=STATE_KEY,
        group_name="rules",
        description=(
            "Round R's rules, decided from days before R only: candidates mined (symbolic miner, "
            "and an LLM when OPENAI_API_KEY is set) on the earlier "
            f"{config.mining_share:.0%} of the champion-of-the-day's out-of-sample days known "
            f"before R (last {config.window_days} days), accepted on the later ones by a "
            f"block-bootstrap p-value with {evaluation.correction} correction over all the round's "
            f"candidates (alpha {evaluation.alpha}); the rules in force in R-1 re-tested on their "
            "post-activation days and retired when they no longer help; greedy selection; in force "
            "from R. Reads its own previous round."
        ),
        ins={
            "retrodiction": dg.AssetIn(
                RETRODICTION_KEY,
                partition_mapping=before_round,
                metadata={READ_EXISTING_ONLY: True},
            ),
            "features": dg.AssetIn(
                FEATURES_KEY, partition_mapping=before_round, metadata={READ_EXISTING_ONLY: True}
            ),
            "previous": dg.AssetIn(
                STATE_KEY,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
                metadata={READ_EXISTING_ONLY: True},
            ),
        },
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"sql", "parquet"},
    )
    def rule_state(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        features: pl.DataFrame,
        previous: pl.DataFrame,
        sql_store: SqlStoreResource,
    ) -> dg.Output[pl.DataFrame]:
        windows = round_windows(partitions, list(context.partition_keys))
        state = _previous_state(context, previous, windows[0], partitions)
        history, names = history_frame(retrodiction, features, labels)
        repository = sql_store.rules()
        runs = []
        for window in windows:
            run = run_round(
                history,
                names,
                window,
                state,
                repository,
                config,
                labels,
                {"type": settings.training.model.kind},
                context.run.run_id,
            )
            context.log.info(f"rules, round {window.key}: {run.decision.outcome}")
            context.log_event(
                dg.AssetObservation(
                    asset_key=STATE_KEY, partition=window.key, metadata=_round_figures(run)
                )
            )
            runs.append(run)
            state = run.state
        frame = pl.concat([run.state for run in runs])
        return dg.Output(frame, metadata=_state_metadata(runs, frame))

    @dg.asset(
        key=IMPACT_KEY,
        group_name="rules",
        description=(
            "Round R's days with the rules in force in R (rules/rule_state of R, decided before R) "
            "applied in order to the champion of the day's forecast: date, round, active_rule_ids, "
            "rules_fired, forecast_<label> (unadjusted), adjusted_<label>, actual_<label>. A rule "
            "whose adjustment is NaN or inf on a day leaves that day's forecast unchanged."
        ),
        ins={
            "state": dg.AssetIn(STATE_KEY),
            "retrodiction": dg.AssetIn(RETRODICTION_KEY),
            "features": dg.AssetIn(FEATURES_KEY),
        },
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"parquet"},
    )
    def rule_impact_asset(
        context: dg.AssetExecutionContext,
        state: pl.DataFrame,
        retrodiction: pl.DataFrame,
        features: pl.DataFrame,
        registry: RegistryResource,
    ) -> dg.Output[pl.DataFrame]:
        frames = []
        for window in round_windows(partitions, list(context.partition_keys)):
            frame = rule_impact(
                retrodiction,
                features,
                state.filter(pl.col("round") == window.key),
                window,
                labels,
            )
            fired = int(frame["rules_fired"].sum()) if frame.height else 0
            outcome = _impact_outcome(frame, window)
            context.log.info(f"rules, round {window.key}: {outcome}")
            context.log_event(
                dg.AssetObservation(
                    asset_key=IMPACT_KEY,
                    partition=window.key,
                    metadata=rounded(
                        {"days": frame.height, "rule_firings": fired, "outcome": outcome}
                        | _round_rmse(frame, labels)
                    ),
                )
            )
            frames.append(frame)
        frame = pl.concat(frames)
        metadata = frame_metadata(frame) | {
            "days": frame.height,
            "days_with_a_rule_in_force": int((frame["active_rule_ids"] != "").sum()),
            "days_a_rule_fired": int((frame["rules_fired"] > 0).sum()),
        }
        if frame.height:
            with tempfile.TemporaryDirectory(prefix="pulse-chart-") as folder:
                chart = rule_impact_chart(frame, labels[0], Path(folder) / "rule_impact.png")
                registry.get().log_report("rule_impact", {"days": float(frame.height)}, [chart])
                metadata |= embedded_charts([chart])
        return dg.Output(frame, metadata=metadata)

    @dg.asset(
        key=GAINS_KEY,
        group_name="rules",
        description=(
            "The gain of each rule ever in force, and of the rules in force together, measured only "
            "on days after its activation (rules/rule_impact rows naming it) with a known actual: "
            f"RMSE without minus with, and a paired block-bootstrap {evaluation.confidence:.0%} "
            "interval over all those days. Also the loop's verdict: every round's rule-adjusted "
            "champion of the day against the first round's model kept as it was (DM test)."
        ),
        ins={
            "impact": dg.AssetIn(IMPACT_KEY, metadata={READ_EXISTING_ONLY: True}),
            "states": dg.AssetIn(STATE_KEY, metadata={READ_EXISTING_ONLY: True}),
            "features": dg.AssetIn(FEATURES_KEY, metadata={READ_EXISTING_ONLY: True}),
            "records": dg.AssetIn(MODEL_KEY, metadata={READ_EXISTING_ONLY: True}),
        },
        kinds={"parquet"},
    )
    def rule_gains(
        context: dg.AssetExecutionContext,
        impact: pl.DataFrame,
        states: pl.DataFrame,
        features: pl.DataFrame,
        records: pl.DataFrame,
        registry: RegistryResource,
    ) -> dg.Output[pl.DataFrame]:
        rounds = sorted(context.instance.get_materialized_partitions(STATE_KEY))
        if impact.height == 0 or not rounds:
            raise RuleRoundError(
                "no round of rules/rule_state and rules/rule_impact is materialized: run the "
                "rules job over the rounds first"
            )
        if states.height == 0:  # rounds ran, but no rule was ever tested: nothing to measure
            states = pl.DataFrame(schema=STATE_SCHEMA)
        gains = post_activation_gains(impact, states, features, labels, evaluation)
        lines = summary_lines(rounds, states, gains, evaluation.confidence)
        for line in lines:
            context.log.info(line)
        table = gains_frame(gains)
        together = [g for g in gains if g.subject == "rules in force"]
        metadata: dict[str, Any] = frame_metadata(
            table, time_column=None, descriptions=GAINS_DESCRIPTIONS
        ) | {
            "summary": dg.MetadataValue.md(
                "\n".join(f"- {escape_markdown(line.strip())}" for line in lines)
            ),
            "gains": markdown_table(table.with_columns(pl.col(pl.Float64).round_sig_figs(4))),
        }
        for gain in together:
            metadata |= rounded(
                {
                    f"post_activation_days_{gain.label}": gain.days,
                    f"post_activation_gain_{gain.label}": gain.gain,
                    f"post_activation_ci_low_{gain.label}": gain.ci_low,
                    f"post_activation_ci_high_{gain.label}": gain.ci_high,
                }
            )
        metadata[LOOP_VERDICT] = _loop_verdict(records, impact, features, registry, labels[0])
        context.log.info(str(metadata[LOOP_VERDICT]))
        return dg.Output(table, metadata=metadata)

    return [rule_state, rule_impact_asset, rule_gains]


def _loop_verdict(
    records: pl.DataFrame,
    impact: pl.DataFrame,
    features: pl.DataFrame,
    registry: RegistryResource,
    label: str,
) -> str:
    """Did the loop beat its first model kept as it was? One sentence, or why not asked."""
    if records.height == 0:
        return "not asked: no training round of models/forecast_model is materialized"
    model_registry = registry.get()
    verdict = against_first_model(records, impact, features, model_registry.load, label)
    return verdict.sentence()


def _impact_outcome(frame: pl.DataFrame, window: RoundWindow) -> str:
    if frame.height == 0:
        return f"no retrodiction day in {window.key}"
    if (frame["active_rule_ids"] == "").all():
        return f"no rule in force in {window.key}: the forecasts are unchanged"
    fired = int((frame["rules_fired"] > 0).sum())
    if fired == 0:
        return f"rules in force, none fired on the {frame.height} days of {window.key}"
    return f"rules fired on {fired} of the {frame.height} days of {window.key}"


def _round_rmse(frame: pl.DataFrame, labels: list[str]) -> dict[str, float]:
    """RMSE of the forecast and of the adjusted forecast over the round's known days."""
    figures = {}
    for label in labels:
        known = frame.drop_nulls([f"actual_{label}", f"forecast_{label}", f"adjusted_{label}"])
        actual = known[f"actual_{label}"].to_numpy()
        for kind in ("forecast", "adjusted"):
            if known.height:
                errors = known[f"{kind}_{label}"].to_numpy() - actual
                figures[f"{kind}_rmse_{label}"] = float(np.sqrt(np.mean(errors**2)))
    return figures
