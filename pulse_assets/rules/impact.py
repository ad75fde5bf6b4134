"""A round's rules applied to its days, and the rule gain measured after activation only.

``rule_impact`` adjusts the champion of the day's forecast on round R's days with the rules in
force in R (R's ``rules/rule_state``), in their order; ``post_activation_gains`` measures each
rule, and the rules in force together, only on days when they were in force, so no day that
chose a rule counts in its reported gain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from pulse_assets.config import RuleEvaluationConfig
from pulse_assets.errors import PulseError
from pulse_assets.rules.evaluation import (
    block_bootstrap_counts,
    chain,
    gain_test,
    rule_arrays,
    usable_rows,
)
from pulse_assets.rules.language import Rule, adjusted_expr, fired_expr, parse
from pulse_assets.rules.rounds import IN_FORCE, RoundWindow, RuleRoundError, day_range
from pulse_assets.training.dataset import TrainingDataError

# --- applying a round's rules to its days --------------------------------------------------


def rules_in_force(
    state: pl.DataFrame, features: list[str], labels: list[str]
) -> list[tuple[str, Rule]]:
    """(rule id, rule) of a round's state rules in force, in the order they apply. A rule that
    no longer reads back is an error: the state was decided with it."""
    rows = state.filter(pl.col("status").is_in(IN_FORCE)).sort("order")
    rules = []
    for row in rows.iter_rows(named=True):
        try:
            rules.append((row["rule_id"], parse(row["definition"], features, labels)))
        except PulseError as error:
            raise RuleRoundError(
                f"rule {row['rule_id']} in force in round {row['round']} no longer reads back "
                f"({str(error).splitlines()[0]}): materialize rules/rule_state again from that "
                "round on, so that it is retired"
            ) from error
    return rules


def rule_impact(
    retrodiction: pl.DataFrame,
    features: pl.DataFrame,
    state: pl.DataFrame,
    window: RoundWindow,
    labels: list[str],
) -> pl.DataFrame:
    """R's days with the rules in force in R applied to the champion of the day's forecast:
    ``date``, ``round``, ``active_rule_ids`` (comma-separated, "" when none), ``rules_fired``
    (rules that changed the forecast that day), and per label ``forecast_<label>``
    (unadjusted), ``adjusted_<label>`` and ``actual_<label>``. Conditions read the day's own
    feature row; a rule that fires to NaN or inf leaves the forecast as it was."""
    names = [c for c in features.columns if c != "date"]
    rules = rules_in_force(state, names, labels)
    days = retrodiction.filter(
        (pl.col("date") >= window.start) & (pl.col("date") < window.end)
    ).sort("date")
    needed = sorted({n for _, rule in rules for n in rule.features()})
    missing = [n for n in needed if n not in features.columns]
    if missing:
        raise TrainingDataError(
            f"rules in force in round {window.key} read feature(s) {missing} that "
            "daily_features lacks: restore them or materialize rules/rule_state again"
        )
    joined = days.join(features.select("date", *needed), on="date", how="left") if needed else days
    fired: list[pl.Expr] = []
    adjusted: list[pl.Expr] = []
    for label in labels:
        current = pl.col(f"forecast_{label}")
        for _, rule in rules:
            if rule.adjustment.label == label:
                fired.append(fired_expr(rule, current).cast(pl.Int64))
                current = adjusted_expr(rule, current)
        adjusted.append(current.alias(f"adjusted_{label}"))
    ids = ",".join(rule_id for rule_id, _ in rules)
    return joined.select(
        "date",
        pl.lit(window.key).alias("round"),
        pl.lit(ids).alias("active_rule_ids"),
        (pl.sum_horizontal(fired) if fired else pl.lit(0, dtype=pl.Int64)).alias("rules_fired"),
        *[
            column
            for label, expr in zip(labels, adjusted, strict=True)
            for column in (pl.col(f"forecast_{label}"), expr, pl.col(f"actual_{label}"))
        ],
    )


# --- the gain, after activation only --------------------------------------------------------


@dataclass(frozen=True)
class PostActivationGain:
    """RMSE without minus with a rule (or the whole set in force) over the days it was in
    force with a known actual: positive when the rule lowered the error."""

    subject: str  # a rule id, or "rules in force"
    label: str
    definition: str
    activated_round: str | None
    days: int
    first: date | None = None
    last: date | None = None
    rmse_without: float | None = None
    rmse_with: float | None = None
    gain: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def text(self, confidence: float) -> str:
        if self.gain is None:
            return f"{self.subject}: no post-activation day with a known actual yet"
        assert self.ci_low is not None and self.ci_high is not None
        return (
            f"{self.subject}: RMSE change {self.gain:+.3g}, {confidence:.0%} CI "
            f"[{self.ci_low:+.3g}, {self.ci_high:+.3g}] over {self.days} post-activation days "
            f"{self.first}..{self.last}"
        )


GAINS_SCHEMA = pl.Schema(
    {
        "subject": pl.String,
        "label": pl.String,
        "definition": pl.String,
        "activated_round": pl.String,
        "days": pl.Int64,
        "first": pl.Date,
        "last": pl.Date,
        "rmse_without": pl.Float64,
        "rmse_with": pl.Float64,
        "gain": pl.Float64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
)
GAINS_DESCRIPTIONS = {
    "subject": "a rule's id, or 'rules in force' for all of them together",
    "label": "the target adjusted",
    "definition": "the rule's canonical text",
    "activated_round": "the round it came into force",
    "days": "post-activation days with a known actual",
    "first": "first post-activation day",
    "last": "last post-activation day",
    "rmse_without": "RMSE of the forecast without it (the other rules in force applied)",
    "rmse_with": "RMSE of what was applied",
    "gain": "rmse_without minus rmse_with (> 0: lower error after activation)",
    "ci_low": "lower end of the gain's block-bootstrap interval",
    "ci_high": "upper end of the gain's block-bootstrap interval",
}


def gains_frame(gains: Sequence[PostActivationGain]) -> pl.DataFrame:
    """The gains as a table (what ``rules/rule_gains`` stores)."""
    return pl.DataFrame([g.__dict__ for g in gains], schema=GAINS_SCHEMA)


def gains_from_frame(frame: pl.DataFrame) -> list[PostActivationGain]:
    """The gains back from ``gains_frame``'s table (the stored ``rules/rule_gains``)."""
    return [
        PostActivationGain(**row)
        for row in frame.select(GAINS_SCHEMA.names()).iter_rows(named=True)
    ]


def _gain(
    subject: tuple[str, str, str, str | None],
    days: pl.DataFrame,
    without: np.ndarray,
    with_: np.ndarray,
    config: RuleEvaluationConfig,
) -> PostActivationGain:
    """RMSE ``without`` minus ``with_`` on ``days`` (sorted, with ``actual_<label>``)."""
    rule_id, label, definition, activated = subject
    if days.height == 0:
        return PostActivationGain(rule_id, label, definition, activated, 0)
    actual = days.get_column(f"actual_{label}").to_numpy().astype(np.float64)
    counts = block_bootstrap_counts(len(actual), config.resamples, config.block_days, config.seed)
    base_se, other_se = (without - actual) ** 2, (with_ - actual) ** 2
    test = gain_test(base_se, other_se[None, :], counts, config.confidence)
    return PostActivationGain(
        rule_id,
        label,
        definition,
        activated,
        len(actual),
        *day_range(days),
        float(np.sqrt(base_se.mean())),
        float(np.sqrt(other_se.mean())),
        float(test.gain[0]),
        float(test.ci_low[0]),
        float(test.ci_high[0]),
    )


def _without(days: pl.DataFrame, rule_id: str, rules: dict[str, Rule], label: str) -> np.ndarray:
    """Each day's forecast with the rules in force that day (its ``active_rule_ids``, in
    order) except ``rule_id``: what the day would have been without that rule."""
    without = np.empty(days.height)
    indexed = days.with_row_index("__row")
    for (ids,), group in indexed.group_by("active_rule_ids", maintain_order=True):
        others = [
            rules[i]
            for i in str(ids).split(",")
            if i != rule_id and rules[i].adjustment.label == label
        ]
        forecast = group.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
        adjusted, _ = chain(rule_arrays(group, others), forecast, range(len(others)))
        without[group.get_column("__row").to_numpy()] = adjusted
    return without


def post_activation_gains(
    impact: pl.DataFrame,
    states: pl.DataFrame,
    features: pl.DataFrame,
    labels: list[str],
    config: RuleEvaluationConfig,
) -> list[PostActivationGain]:
    """Per rule ever in force, and for the rules in force together (per label): the RMSE
    change over all days it was in force (``rule_impact`` rows naming it) whose actual is
    known, with a paired block-bootstrap interval over those days. A rule's change is what it
    added to the rules in force with it each day (the day's rules without it against
    ``adjusted_<label>``, what was applied); the set's is ``adjusted_`` against ``forecast_``.
    ``states``: rule_state rows of every round (status, rule_id, definition, round,
    activated_round); ``features``: the feature rows of the impact's days."""
    names = [c for c in features.columns if c != "date"]
    ever = (
        states.filter(pl.col("status").is_in(IN_FORCE))
        .sort("round")
        .unique("rule_id", keep="first", maintain_order=True)
    )
    rules = {
        row["rule_id"]: parse(row["definition"], names, labels)
        for row in ever.iter_rows(named=True)
    }
    needed = sorted({name for rule in rules.values() for name in rule.features()})
    joined = impact.join(features.select("date", *needed), on="date", how="left")
    gains = []
    for row in ever.iter_rows(named=True):
        rule_id, label = row["rule_id"], rules[row["rule_id"]].adjustment.label
        named = pl.col("active_rule_ids").str.split(",").list.contains(rule_id)
        days = usable_rows(joined.filter(named), label)
        subject = (rule_id, label, row["definition"], row["activated_round"])
        with_ = days.get_column(f"adjusted_{label}").to_numpy().astype(np.float64)
        gains.append(_gain(subject, days, _without(days, rule_id, rules, label), with_, config))
    for label in labels:
        days = usable_rows(impact.filter(pl.col("active_rule_ids") != ""), label)
        gains.append(
            _gain(
                ("rules in force", label, "", None),
                days,
                days.get_column(f"forecast_{label}").to_numpy().astype(np.float64),
                days.get_column(f"adjusted_{label}").to_numpy().astype(np.float64),
                config,
            )
        )
    return gains


def summary_lines(
    rounds: Sequence[str],
    states: pl.DataFrame,
    gains: Sequence[PostActivationGain],
    confidence: float,
) -> list[str]:
    """What the rule loop did over ``rounds`` (the materialized rounds of ``rules/rule_state``;
    a round that tested nothing has no row in ``states``, every round's rows): candidates
    tested, the rounds in which rules were activated and retired, and the gains after
    activation (``post_activation_gains``)."""
    if not rounds:
        return ["rules: no round of rules/rule_state is materialized"]
    ordered = sorted(rounds)
    tested = states.filter(pl.col("status").is_in(("accepted", "rejected", "activated")))
    activated = states.filter(pl.col("status") == "activated").sort("round")
    retired = states.filter(pl.col("status") == "retired").sort("round")
    idle = len(set(ordered) - set(tested.get_column("round").to_list()))
    lines = [
        f"rules over {len(ordered)} rounds {ordered[0]}..{ordered[-1]}: {tested.height} "
        f"candidate test(s), {activated.height} activation(s), {retired.height} "
        f"retirement(s); {idle} round(s) without a candidate to test"
    ]
    for row in activated.iter_rows(named=True):
        lines.append(f"  activated in {row['round']}: {row['rule_id']} {row['definition']}")
    for row in retired.iter_rows(named=True):
        lines.append(f"  retired in {row['round']}: {row['rule_id']}: {row['reason']}")
    if activated.height == 0:
        smallest = tested.select(pl.col("p_adjusted").min()).item()
        best = (
            f"; the smallest corrected p-value was {smallest:.3g}" if smallest is not None else ""
        )
        lines.append(f"  no rule was activated in any round{best}")
    lines.append("  gain after activation only (RMSE without minus with; positive: lower error):")
    lines += [f"    {gain.text(confidence)}" for gain in gains]
    return lines
