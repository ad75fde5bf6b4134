"""The rule loop across the walk-forward's rounds, strictly after the fact (framework-free).

Round R (days ``start <= t < end``) is decided as it would have been on R's first day, from
the champion-of-the-day's out-of-sample retrodiction days whose actual was known before R
starts (day t's actual is the next trading day's value, so the last trading day before R is
left out), within ``rules.window_days``:

1. **Retirement**: the rules in force in R-1, each tested on its post-activation days (on or
   after its activation, before R, within the window) once it has ``retire_after_days`` of
   them, for what it adds beside the other rules in force (RMSE without it minus with it, a
   block-bootstrap p-value). While some fail (p >= ``alpha``), the worst retires and the rest
   are tested again (backward elimination). Not corrected: a correction would only retire more.
2. **Mining**: the earlier ``mining_share`` of those days; the symbolic miner and (with a key)
   the LLM, whose prompt carries the round's error patterns and how earlier rounds' rules did.
3. **Acceptance**: every candidate of the round on the later days (still before R), by the
   same test, on top of the rules kept in force, corrected over all the round's candidates
   (Holm or Benjamini-Hochberg, ``correct``).
4. **Selection**: greedy forward selection on the acceptance days, the kept rules applied
   first; the rules chosen are in force from R (their ``activated_round``).

The outcome is the round's state (``state_frame``): R+1 reads it, R's days are adjusted by
its rules in force (``impact.rule_impact``), and the gain of rules is measured only on days
after their activation (``impact.post_activation_gains``). The rule repository records each
status change with the round in its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Protocol

import numpy as np
import polars as pl
from scipy import stats

from pulse_assets.config import RuleEvaluationConfig, RulesConfig
from pulse_assets.errors import PulseError
from pulse_assets.features.pipeline import feature_columns
from pulse_assets.rules.evaluation import (
    block_bootstrap_counts,
    chain,
    conflicts,
    evaluate_rules,
    gain_test,
    rule_arrays,
    select_rules,
    usable_rows,
)
from pulse_assets.rules.language import Rule, parse
from pulse_assets.rules.loop import Proposal, propose, readable
from pulse_assets.rules.repository import RuleRepository

IN_FORCE = ("active", "activated")
RETIRED = ("retired", "retired_earlier")
STATE_SCHEMA = pl.Schema(
    {
        "date": pl.Date,  # the round's start: the partition the row belongs to
        "round": pl.String,
        "rule_id": pl.String,
        "label": pl.String,
        "definition": pl.String,
        "source": pl.String,
        # active (in force, carried), activated (in force from this round), retired (at this
        # round), retired_earlier (before it), accepted (passed, not chosen), rejected
        "status": pl.String,
        "order": pl.Int64,  # place in the order rules in force apply
        "activated_round": pl.String,
        "activated_on": pl.Date,
        "retired_round": pl.String,
        "retired_on": pl.Date,
        "reason": pl.String,
        "test_days": pl.Int64,
        "test_first": pl.Date,
        "test_last": pl.Date,
        "fired_rows": pl.Int64,
        "gain": pl.Float64,  # RMSE without the rule minus with it, on the test days
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
        "p_value": pl.Float64,
        "p_adjusted": pl.Float64,
    }
)
STATE_DESCRIPTIONS = {
    "date": "the round's first day (the partition)",
    "round": "the round decided",
    "rule_id": "the rule's id in the repository",
    "label": "the target the rule adjusts",
    "definition": "the rule's canonical text",
    "source": "symbolic miner or LLM",
    "status": "active, activated (from this round), retired (at it), retired_earlier, "
    "accepted (not chosen) or rejected",
    "order": "its place in the order rules in force apply",
    "activated_round": "the round it came into force",
    "activated_on": "the first day it was in force",
    "retired_round": "the round it retired",
    "retired_on": "the day it retired",
    "reason": "why it has this status",
    "test_days": "days of the test that decided (all before the round)",
    "test_first": "first test day",
    "test_last": "last test day",
    "fired_rows": "test days on which it fired",
    "gain": "RMSE without it minus with it on the test days (> 0: it helped)",
    "ci_low": "lower end of the gain's block-bootstrap interval",
    "ci_high": "upper end of the gain's block-bootstrap interval",
    "p_value": "one-sided p-value of no gain",
    "p_adjusted": "p-value after the correction over the round's candidates",
}


class RoundWindow(Protocol):
    """A round: its partition key and its days ``start <= t < end``
    (``pulse_assets.training.rounds.RoundWindow`` is one; this module does not import the
    training code, and with it torch)."""

    @property
    def key(self) -> str: ...

    @property
    def start(self) -> date: ...

    @property
    def end(self) -> date: ...


class RuleRoundError(PulseError):
    """A round of the rule loop cannot run: what is missing and what to do."""


# --- the round's data ----------------------------------------------------------------------


@dataclass(frozen=True)
class RoundSlices:
    """The days round R may learn from: ``past`` = ``mining`` + ``acceptance``, in order."""

    past: pl.DataFrame
    mining: pl.DataFrame
    acceptance: pl.DataFrame


def known_rows(
    history: pl.DataFrame, window: RoundWindow, config: RulesConfig, labels: list[str]
) -> pl.DataFrame:
    """Out-of-sample rows of ``history`` (retrodiction rows with features) whose actuals were
    known before ``window.start``, within ``config.window_days`` before it, sorted by date.

    Day t's actual is its next trading day's value: the last day before R resolves on or after
    R's start, so it is left out. Rows missing a forecast, actual or error are left out."""
    first = window.start - timedelta(days=config.window_days)
    before = history.filter(
        (pl.col("date") >= first) & (pl.col("date") < window.start) & ~pl.col("in_sample")
    ).sort("date")
    if before.height == 0:
        return before
    before = before.filter(pl.col("date") < before.get_column("date").max())
    needed = [f"{kind}_{label}" for label in labels for kind in ("forecast", "actual", "error")]
    return before.filter(
        pl.all_horizontal(pl.col(c).cast(pl.Float64).is_finite() for c in needed).fill_null(False)
    )


def round_slices(
    history: pl.DataFrame, window: RoundWindow, config: RulesConfig, labels: list[str]
) -> RoundSlices:
    """The earlier ``mining_share`` of the known days mines, the later ones accept."""
    past = known_rows(history, window, config, labels)
    cut = int(past.height * config.mining_share)
    return RoundSlices(past, past.head(cut), past.slice(cut))


def history_frame(
    retrodiction: pl.DataFrame, features: pl.DataFrame, labels: list[str]
) -> tuple[pl.DataFrame, list[str]]:
    """Retrodiction rows (date, in_sample, model_version, forecast_/actual_/error_<label>)
    joined with the feature row of each day, and the feature names: what a round reads."""
    names = feature_columns(features) if "date" in features.columns else []
    measured = [f"{kind}_{label}" for label in labels for kind in ("forecast", "actual", "error")]
    schema = {"date": pl.Date, "in_sample": pl.Boolean, "model_version": pl.String}
    if retrodiction.height == 0:
        empty = pl.DataFrame(schema=schema | dict.fromkeys([*measured, *names], pl.Float64))
        return empty, names
    frame = retrodiction.select(*schema, *measured)
    if names:
        frame = frame.join(features.select("date", *names), on="date", how="left")
    return frame.sort("date"), names


def day_range(frame: pl.DataFrame) -> tuple[date, date]:
    """The first and last ``date`` of ``frame``, which must have one."""
    first, last = frame.get_column("date").min(), frame.get_column("date").max()
    if not isinstance(first, date) or not isinstance(last, date):
        raise RuleRoundError(f"no dated day among {frame.height} row(s) to test rules on")
    return first, last


def span(frame: pl.DataFrame) -> str:
    """``first..last`` of ``frame``'s dates, or ``no day``."""
    if frame.height == 0:
        return "no day"
    dates = frame.get_column("date")
    return f"{dates.min()!s}..{dates.max()!s}"


# --- the rules of a round ------------------------------------------------------------------


@dataclass(frozen=True)
class StateEntry:
    """A rule as a round's state records it."""

    rule_id: str
    label: str
    definition: str
    source: str
    activated_round: str | None = None
    activated_on: date | None = None
    order: int | None = None


@dataclass(frozen=True)
class ActiveRule:
    entry: StateEntry
    rule: Rule


@dataclass(frozen=True)
class Candidate:
    rule_id: str
    version: int
    source: str
    rule: Rule


@dataclass(frozen=True)
class TestResult:
    """A rule alone against the champion's forecast on some days (block bootstrap)."""

    days: int
    first: date
    last: date
    fired_rows: int
    gain: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float | None = None

    def text(self, confidence: float) -> str:
        adjusted = "" if self.p_adjusted is None else f", adjusted p {self.p_adjusted:.3g}"
        return (
            f"RMSE change {self.gain:+.3g} on {self.days} days {self.first}..{self.last} "
            f"(fired on {self.fired_rows}), {confidence:.0%} CI [{self.ci_low:+.3g}, "
            f"{self.ci_high:+.3g}], p {self.p_value:.3g}{adjusted}"
        )


@dataclass(frozen=True)
class Judged:
    candidate: Candidate
    test: TestResult | None
    accepted: bool
    reason: str


@dataclass(frozen=True)
class Retention:
    active: ActiveRule
    test: TestResult | None
    kept: bool
    reason: str


@dataclass
class RoundDecision:
    window: RoundWindow
    mining: str
    acceptance: str
    judged: list[Judged] = field(default_factory=list)
    retention: list[Retention] = field(default_factory=list)
    activated: list[ActiveRule] = field(default_factory=list)
    not_chosen: dict[str, str] = field(default_factory=dict)  # rule id: why
    outcome: str = ""

    def in_force(self) -> list[ActiveRule]:
        """The rules applied to R's days, in the order they apply."""
        return [r.active for r in self.retention if r.kept] + self.activated


def _tests(
    frame: pl.DataFrame, rules: list[Rule], config: RuleEvaluationConfig
) -> list[TestResult]:
    scores = evaluate_rules(
        frame,
        rules,
        resamples=config.resamples,
        block=config.block_days,
        confidence=config.confidence,
        seed=config.seed,
    )
    first, last = day_range(frame)
    return [
        TestResult(
            frame.height, first, last, s.fired_rows, s.improvement, s.ci_low, s.ci_high, s.p_value
        )
        for s in scores
    ]


def correct(
    p_values: Sequence[float], config: RuleEvaluationConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The adjusted p-values of a family and which of them are at or below ``alpha``, by
    ``config.correction``: Holm's step-down, or Benjamini-Hochberg
    (``scipy.stats.false_discovery_control``). Holm is written out because statsmodels'
    ``multipletests`` runs a full ``gc.collect()`` on every Holm call (about a second in a
    Dagster process, each round); the tests hold both to statsmodels' results."""
    p = np.asarray(p_values, dtype=np.float64)
    if config.correction == "fdr_bh":
        adjusted = np.asarray(stats.false_discovery_control(p, method="bh"))
    else:
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
        adjusted = np.empty_like(p)
        adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted <= config.alpha, adjusted


def judge_candidates(
    acceptance: pl.DataFrame, candidates: Sequence[Candidate], config: RuleEvaluationConfig
) -> list[Judged]:
    """Each candidate's p-value on the acceptance days, corrected over all of them: accepted
    when the corrected test rejects "does not lower the RMSE" at ``alpha``."""
    if not candidates:
        return []
    if acceptance.height < config.min_acceptance_days:
        why = (
            f"rejected: only {acceptance.height} acceptance day(s) known before the round "
            f"(rules.evaluation.min_acceptance_days is {config.min_acceptance_days})"
        )
        return [Judged(c, None, False, why) for c in candidates]
    tests = _tests(acceptance, [c.rule for c in candidates], config)
    reject, adjusted = correct([t.p_value for t in tests], config)
    family = f"{config.correction} over {len(candidates)} candidate(s), alpha {config.alpha}"
    judged = []
    for candidate, plain, passes, p_adjusted in zip(
        candidates, tests, reject, adjusted, strict=True
    ):
        test = TestResult(**{**plain.__dict__, "p_adjusted": float(p_adjusted)})
        accepted = bool(passes) and test.gain > 0
        verdict = "accepted" if accepted else "rejected"
        judged.append(
            Judged(
                candidate,
                test,
                accepted,
                f"{verdict}: {test.text(config.confidence)} ({family})",
            )
        )
    return judged


def in_context(frame: pl.DataFrame, rules: Sequence[Rule], labels: list[str]) -> pl.DataFrame:
    """``frame`` (finite forecasts, as ``known_rows`` gives) with each ``forecast_<label>``
    replaced by the forecast with ``rules`` applied in order: what a new rule would adjust."""
    replaced = []
    for label in labels:
        mine = [rule for rule in rules if rule.adjustment.label == label]
        if mine:
            forecast = frame.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
            adjusted, _ = chain(rule_arrays(frame, mine), forecast, range(len(mine)))
            replaced.append(pl.Series(f"forecast_{label}", adjusted))
    return frame.with_columns(replaced) if replaced else frame


def marginal_test(
    frame: pl.DataFrame, rules: Sequence[Rule], index: int, config: RuleEvaluationConfig
) -> TestResult:
    """What rule ``index`` adds to ``rules`` applied in order on ``frame``'s days: the RMSE
    without it minus with it, tested like a candidate (block bootstrap, one-sided p)."""
    label = rules[index].adjustment.label
    usable = usable_rows(frame, label)
    members = [i for i, rule in enumerate(rules) if rule.adjustment.label == label]
    position = members.index(index)
    arrays = rule_arrays(usable, [rules[i] for i in members])
    forecast = usable.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
    actual = usable.get_column(f"actual_{label}").to_numpy().astype(np.float64)
    everything, fired = chain(arrays, forecast, range(len(members)))
    without, _ = chain(arrays, forecast, [k for k in range(len(members)) if k != position])
    counts = block_bootstrap_counts(len(actual), config.resamples, config.block_days, config.seed)
    test = gain_test(
        (without - actual) ** 2, ((everything - actual) ** 2)[None, :], counts, config.confidence
    )
    return TestResult(
        len(actual),
        *day_range(usable),
        int(fired[position].sum()),
        float(test.gain[0]),
        float(test.ci_low[0]),
        float(test.ci_high[0]),
        float(test.p_value[0]),
    )


def retain(
    past: pl.DataFrame, in_force: Sequence[ActiveRule], config: RuleEvaluationConfig
) -> list[Retention]:
    """Backward elimination of the rules in force: each rule with ``retire_after_days``
    post-activation days in ``past`` is tested for what it adds to the others (all applied in
    order, on its own post-activation days); while some fail (p >= alpha), the worst retires
    and the rest are tested again without it. Two rules that do the same job do not both
    retire for being redundant: the second is kept once the first is gone."""
    current = list(in_force)
    retired: dict[str, Retention] = {}
    tests: dict[str, TestResult] = {}
    while True:
        tests = {}
        rules = [a.rule for a in current]
        for index, active in enumerate(current):
            days = past.filter(pl.col("date") >= active.entry.activated_on)
            if days.height >= config.retire_after_days:
                tests[active.entry.rule_id] = marginal_test(days, rules, index, config)
        failing = [
            (t.p_value, rule_id) for rule_id, t in tests.items() if t.p_value >= config.alpha
        ]
        if not failing:
            break
        _, worst = max(failing)
        active = next(a for a in current if a.entry.rule_id == worst)
        test = tests[worst]
        reason = (
            "retired: no longer lowers the RMSE after activation, beside the other rules in "
            f"force: {test.text(config.confidence)} >= alpha {config.alpha}"
        )
        retired[worst] = Retention(active, test, False, reason)
        current.remove(active)
    results = []
    for active in in_force:
        rule_id = active.entry.rule_id
        if rule_id in retired:
            results.append(retired[rule_id])
        elif rule_id in tests:
            test = tests[rule_id]
            reason = (
                "kept: still lowers the RMSE after activation, beside the other rules in force: "
                f"{test.text(config.confidence)} < alpha {config.alpha}"
            )
            results.append(Retention(active, test, True, reason))
        else:
            count = past.filter(pl.col("date") >= active.entry.activated_on).height
            reason = (
                f"kept: {count} post-activation day(s) known before the round, fewer than the "
                f"{config.retire_after_days} needed to judge it (rules.evaluation.retire_after_days)"
            )
            results.append(Retention(active, None, True, reason))
    return results


def _choose(
    acceptance: pl.DataFrame,
    kept: list[ActiveRule],
    accepted: list[Judged],
    config: RuleEvaluationConfig,
) -> tuple[list[int], dict[str, str]]:
    """Greedy selection of accepted candidates on top of the kept rules; why each other
    accepted candidate was not chosen."""
    rules = [k.rule for k in kept] + [j.candidate.rule for j in accepted]
    fixed = list(range(len(kept)))
    options = list(range(len(kept), len(rules)))
    room = max(0, config.max_active - len(kept))
    chosen = select_rules(acceptance, rules, options, room, fixed=fixed) if room else []
    in_set = set(fixed) | set(chosen)
    ids = [k.entry.rule_id for k in kept] + [j.candidate.rule_id for j in accepted]
    clashes: dict[int, list[str]] = {}
    for clash in conflicts(acceptance, rules):
        for mine, other in ((clash.first, clash.second), (clash.second, clash.first)):
            if other in in_set:
                clashes.setdefault(mine, []).append(ids[other])
    why = {}
    for index in options:
        if index in in_set:
            continue
        if index in clashes:
            why[ids[index]] = f"conflicts with rule(s) {', '.join(clashes[index])} in force"
        elif len(in_set) >= config.max_active:
            why[ids[index]] = (
                f"the active set is full (rules.evaluation.max_active {config.max_active})"
            )
        else:
            why[ids[index]] = "adds nothing to the active set on the acceptance days"
    return [index - len(kept) for index in chosen], why


def _cooling(
    candidates: Sequence[Candidate], retired_on: Mapping[str, date], acceptance: pl.DataFrame
) -> dict[str, str]:
    """Candidates retired after the first acceptance day, with why they are not tested."""
    first = acceptance.get_column("date").min() if acceptance.height else None
    if not isinstance(first, date):
        return {}
    return {
        c.rule_id: f"not tested: retired on {retired_on[c.rule_id]} for no longer helping; it "
        f"is judged again once all its acceptance days follow that (these start {first})"
        for c in candidates
        if c.rule_id in retired_on and retired_on[c.rule_id] > first
    }


def decide_round(
    slices: RoundSlices,
    window: RoundWindow,
    candidates: Sequence[Candidate],
    in_force: Sequence[ActiveRule],
    config: RuleEvaluationConfig,
    labels: list[str],
    no_candidate_reason: str = "",
    retired_on: Mapping[str, date] | None = None,
) -> RoundDecision:
    """Accept, retire and select for round R from ``slices`` only (days before R).

    ``retired_on``: when earlier rounds retired rules (the previous state's ledger). Such a
    rule proposed again is not tested while its acceptance days include days before its
    retirement: the older days that chose it once cannot outvote the newer ones that retired
    it."""
    decision = RoundDecision(window, span(slices.mining), span(slices.acceptance))
    cooling = _cooling(candidates, retired_on or {}, slices.acceptance)
    tested = [c for c in candidates if c.rule_id not in cooling]
    decision.retention = retain(slices.past, in_force, config)
    kept = [r.active for r in decision.retention if r.kept]
    # candidates are judged on what they add to the rules kept in force, like those rules
    context = in_context(slices.acceptance, [k.rule for k in kept], labels)
    decision.judged = judge_candidates(context, tested, config) + [
        Judged(c, None, False, cooling[c.rule_id]) for c in candidates if c.rule_id in cooling
    ]
    accepted = [j for j in decision.judged if j.accepted]
    chosen, decision.not_chosen = _choose(slices.acceptance, kept, accepted, config)
    order = len(kept)
    for position, index in enumerate(chosen):
        candidate = accepted[index].candidate
        decision.activated.append(
            ActiveRule(
                StateEntry(
                    candidate.rule_id,
                    candidate.rule.adjustment.label,
                    candidate.rule.canonical(),
                    candidate.source,
                    window.key,
                    window.start,
                    order + position,
                ),
                candidate.rule,
            )
        )
    decision.outcome = _outcome(decision, config, no_candidate_reason)
    return decision


def _outcome(decision: RoundDecision, config: RuleEvaluationConfig, no_candidate: str) -> str:
    """One sentence per step: what the round did, never left implicit."""
    parts = []
    judged = decision.judged
    tested = [j for j in judged if j.test is not None]
    untested = [j for j in judged if j.test is None]
    if not judged:
        parts.append(f"no candidate: {no_candidate or 'none proposed'}")
    if untested:
        parts.append(f"{len(untested)} candidate(s) {untested[0].reason}")
    if tested:
        accepted = sum(j.accepted for j in tested)
        smallest = min(
            j.test.p_adjusted for j in tested if j.test and j.test.p_adjusted is not None
        )
        parts.append(
            f"{len(tested)} candidate(s) tested on the acceptance days {decision.acceptance}: "
            f"{accepted} accepted ({config.correction}, alpha {config.alpha}; smallest adjusted "
            f"p {smallest:.3g})"
        )
        if accepted:
            parts.append(f"{len(decision.activated)} activated from {decision.window.start}")
    retired = [r for r in decision.retention if not r.kept]
    if decision.retention:
        parts.append(f"{len(retired)} of {len(decision.retention)} rule(s) in force retired")
    in_force = decision.in_force()
    parts.append(f"{len(in_force)} rule(s) in force in {decision.window.key}")
    return "; ".join(parts)


# --- the state a round leaves ----------------------------------------------------------------


def in_force_rules(
    previous: pl.DataFrame, features: list[str], labels: list[str]
) -> tuple[list[ActiveRule], list[tuple[StateEntry, str]]]:
    """The rules in force in the previous round's state, in order, read again against today's
    features and labels; those that no longer read back, with the reason."""
    if previous.height == 0:
        return [], []
    readable_rules, unreadable = [], []
    rows = previous.filter(pl.col("status").is_in(IN_FORCE)).sort("order")
    for row in rows.iter_rows(named=True):
        entry = StateEntry(
            row["rule_id"],
            row["label"],
            row["definition"],
            row["source"],
            row["activated_round"],
            row["activated_on"],
            row["order"],
        )
        try:
            readable_rules.append(ActiveRule(entry, parse(entry.definition, features, labels)))
        except PulseError as error:
            unreadable.append(
                (entry, f"retired: it no longer reads back ({str(error).splitlines()[0]})")
            )
    return readable_rules, unreadable


def _row(
    window: RoundWindow,
    entry: StateEntry,
    status: str,
    reason: str,
    test: TestResult | None,
    order: int | None = None,
) -> dict[str, Any]:
    return {
        "date": window.start,
        "round": window.key,
        "rule_id": entry.rule_id,
        "label": entry.label,
        "definition": entry.definition,
        "source": entry.source,
        "status": status,
        "order": order,
        "activated_round": entry.activated_round,
        "activated_on": entry.activated_on,
        "retired_round": window.key if status == "retired" else None,
        "retired_on": window.start if status == "retired" else None,
        "reason": reason,
        "test_days": test.days if test else None,
        "test_first": test.first if test else None,
        "test_last": test.last if test else None,
        "fired_rows": test.fired_rows if test else None,
        "gain": test.gain if test else None,
        "ci_low": test.ci_low if test else None,
        "ci_high": test.ci_high if test else None,
        "p_value": test.p_value if test else None,
        "p_adjusted": test.p_adjusted if test else None,
    }


def state_frame(
    decision: RoundDecision,
    previous: pl.DataFrame,
    unreadable: Sequence[tuple[StateEntry, str]] = (),
) -> pl.DataFrame:
    """Round R's state: its rules in force (in order), those retired at R and before, and
    every candidate of R with its test. R+1 starts from it."""
    window = decision.window
    rows = []
    order = 0
    for retention in decision.retention:
        if retention.kept:
            rows.append(
                _row(
                    window,
                    retention.active.entry,
                    "active",
                    retention.reason,
                    retention.test,
                    order,
                )
            )
            order += 1
    judged = {j.candidate.rule_id: j for j in decision.judged}
    for active in decision.activated:
        test = judged[active.entry.rule_id].test
        reason = f"activated from {window.start}: chosen by greedy forward selection on the acceptance days {decision.acceptance}"
        rows.append(_row(window, active.entry, "activated", reason, test, order))
        order += 1
    for retention in decision.retention:
        if not retention.kept:
            rows.append(
                _row(window, retention.active.entry, "retired", retention.reason, retention.test)
            )
    for entry, reason in unreadable:
        rows.append(_row(window, entry, "retired", reason, None))
    activated = {a.entry.rule_id for a in decision.activated}
    for judgement in decision.judged:
        candidate = judgement.candidate
        if candidate.rule_id in activated:
            continue
        entry = StateEntry(
            candidate.rule_id,
            candidate.rule.adjustment.label,
            candidate.rule.canonical(),
            candidate.source,
        )
        status, reason = "rejected", judgement.reason
        if judgement.accepted:
            status = "accepted"
            reason = f"{reason}; not chosen: {decision.not_chosen[candidate.rule_id]}"
        rows.append(_row(window, entry, status, reason, judgement.test))
    frame = pl.DataFrame(rows, schema=STATE_SCHEMA)
    if previous.height:
        ledger = previous.filter(pl.col("status").is_in(RETIRED)).with_columns(
            pl.lit(window.start).alias("date"),
            pl.lit(window.key).alias("round"),
            pl.lit("retired_earlier").alias("status"),
        )
        frame = pl.concat([frame, ledger.select(STATE_SCHEMA.keys()).cast(STATE_SCHEMA)])
    return frame


def empty_state() -> pl.DataFrame:
    return pl.DataFrame(schema=STATE_SCHEMA)


def earlier_outcomes(previous: pl.DataFrame, limit: int = 30) -> list[dict[str, Any]]:
    """How the rules of earlier rounds did, as the previous round's state says: for the LLM."""
    if previous.height == 0:
        return []
    rows = previous.filter(pl.col("status").is_in((*IN_FORCE, *RETIRED))).sort(
        "activated_on", descending=True, nulls_last=True
    )
    return [
        {
            "rule": row["definition"],
            "status": "in force" if row["status"] in IN_FORCE else "retired",
            "activated_round": row["activated_round"],
            "retired_round": row["retired_round"],
            "outcome": row["reason"],
        }
        for row in rows.head(limit).iter_rows(named=True)
    ]


def retirements(previous: pl.DataFrame) -> dict[str, date]:
    """When each rule of the previous state's ledger was last retired."""
    if previous.height == 0:
        return {}
    rows = previous.filter(pl.col("status").is_in(RETIRED)).drop_nulls("retired_on")
    latest = rows.group_by("rule_id").agg(pl.col("retired_on").max())
    return dict(zip(latest["rule_id"].to_list(), latest["retired_on"].to_list(), strict=True))


# --- one round with the repository ----------------------------------------------------------


@dataclass(frozen=True)
class RoundRun:
    decision: RoundDecision
    proposal: Proposal | None
    state: pl.DataFrame


def _candidates(
    proposal: Proposal,
    in_force: Sequence[ActiveRule],
    repository: RuleRepository,
    window: RoundWindow,
    features: list[str],
    labels: list[str],
    run_id: str | None,
) -> list[Candidate]:
    """The round's candidates: every rule proposed that is not in force; stored rules proposed
    again go back to draft (with the round in the reason)."""
    forced = {a.entry.rule_id for a in in_force}
    usable, unusable = readable(
        [r for r in proposal.proposed() if r.rule_id not in forced], features, labels
    )
    again = f"round {window.key}: proposed again from errors known before {window.start}"
    repository.move_many(
        [(r.rule_id, "rejected", f"round {window.key}: {error}") for r, error in unusable]
        + [(r.rule_id, "draft", again) for r, _ in usable if r.status != "draft"],
        run_id=run_id,
    )
    return [Candidate(r.rule_id, r.version, r.source, rule) for r, rule in usable]


def _evaluation(
    rule_id: str, version: int, test: TestResult, accepted: bool, run_id: str | None
) -> dict[str, Any]:
    figures = {"improvement": test.gain, "p_value": test.p_value, "p_adjusted": test.p_adjusted}
    return {
        "rule_id": rule_id,
        "version": version,
        "window": (test.first, test.last),
        "rows": test.days,
        "fired_rows": test.fired_rows,
        # the figures that are numbers: JSON stores (PostgreSQL's) refuse NaN
        "metrics": {k: v for k, v in figures.items() if v is not None and np.isfinite(v)},
        "ci": (test.ci_low, test.ci_high),
        "accepted": accepted,
        "run_id": run_id,
    }


def record_round(
    repository: RuleRepository,
    decision: RoundDecision,
    run_id: str | None,
    unreadable: Sequence[tuple[StateEntry, str]] = (),
) -> None:
    """Every decision of the round as status changes with reasons (one transaction) and the
    tests as stored evaluations (another)."""
    key = decision.window.key
    activated = {a.entry.rule_id for a in decision.activated}
    moves: list[tuple[str, str, str]] = []
    evaluations = []
    for judged in decision.judged:
        rule_id, test = judged.candidate.rule_id, judged.test
        if test is not None:
            evaluations.append(
                _evaluation(rule_id, judged.candidate.version, test, judged.accepted, run_id)
            )
            moves.append((rule_id, "evaluated", f"round {key}: tested"))
        verdict = "accepted" if judged.accepted else "rejected"
        moves.append((rule_id, verdict, f"round {key}: {judged.reason}"))
        if rule_id in activated:
            why = f"chosen by greedy forward selection; active from {decision.window.start}"
            moves.append((rule_id, "active", f"round {key}: {why}"))
        elif judged.accepted:
            why = decision.not_chosen[rule_id]
            moves.append((rule_id, "retired", f"round {key}: not chosen: {why}"))
    for retention in decision.retention:
        entry, test = retention.active.entry, retention.test
        if test is not None:
            version = repository.get(entry.rule_id).version
            evaluations.append(_evaluation(entry.rule_id, version, test, retention.kept, run_id))
        if not retention.kept:
            moves.append((entry.rule_id, "retired", f"round {key}: {retention.reason}"))
    moves += [(entry.rule_id, "retired", f"round {key}: {why}") for entry, why in unreadable]
    repository.record_evaluations(evaluations)
    repository.move_many(moves, run_id=run_id)


def run_round(
    history: pl.DataFrame,
    features: list[str],
    window: RoundWindow,
    previous: pl.DataFrame,
    repository: RuleRepository,
    config: RulesConfig,
    labels: list[str],
    model: dict[str, Any],
    run_id: str | None,
) -> RoundRun:
    """Round R of the rule loop: propose, accept, retire, select, record; R's state.

    ``history``: ``history_frame``'s rows (retrodiction with the feature columns ``features``
    of each day); only the rows known before R are read. ``previous``: round R-1's state
    (``empty_state()`` before the first round). ``model``: what the LLM is told about the
    model (its type), beside the champion versions of the mining days."""
    slices = round_slices(history, window, config, labels)
    in_force, unreadable = in_force_rules(previous, features, labels)
    proposal = None
    no_candidate = (
        f"no retrodiction day known before {window.start} in the last {config.window_days} days"
    )
    candidates: list[Candidate] = []
    if slices.mining.height:
        versions = slices.mining.get_column("model_version").unique().sort().to_list()
        context = {
            "model": model | {"champion_versions_of_the_mining_days": versions},
            "round": window.key,
            "mining_days": span(slices.mining),
            "earlier_rules": earlier_outcomes(previous),
        }
        proposal = propose(slices.mining, features, repository, config, labels, context, run_id)
        candidates = _candidates(proposal, in_force, repository, window, features, labels, run_id)
        no_candidate = (
            f"{proposal.patterns} error pattern(s) passed the FDR control on the "
            f"{slices.mining.height} mining days {span(slices.mining)}, none gave a rule not in "
            f"force; LLM step: {proposal.llm.status}"
        )
    decision = decide_round(
        slices,
        window,
        candidates,
        in_force,
        config.evaluation,
        labels,
        no_candidate,
        retirements(previous),
    )
    record_round(repository, decision, run_id, unreadable)
    if unreadable:
        decision.outcome += f"; {len(unreadable)} rule(s) in force no longer read back: retired"
    return RoundRun(decision, proposal, state_frame(decision, previous, unreadable))
