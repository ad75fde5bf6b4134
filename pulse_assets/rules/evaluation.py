"""Evaluate many rules at once on retrodiction days (the plan's RecursiveRuleEvaluator).

For R rules over n days: one polars ``select`` computes every rule's condition and
adjustment value, numpy applies them (a rule fires where its condition holds and its
adjusted forecast is finite, as ``language.fired_expr`` says), squared errors form an (R, n)
array, and the paired moving-block bootstrap draws B resamples as a (B, n) matrix of counts,
so every resample's RMSE for every rule is one matrix product (B, n) @ (n, R). Baseline and
rule share each resample (paired).

Each rule gets its RMSE improvement, a percentile interval, and a one-sided p-value of "the
rule lowers the RMSE": ``1 - Phi(gain / se)``, with ``se`` the standard deviation of the gain
over the block-bootstrap resamples. A count of resamples (``#{gain_b <= 0} / B``) cannot go
below 1/(B+1), so Holm over m candidates could never accept anything unless B > m / alpha
(20,000 resamples for 1,000 candidates); the normal approximation has no such floor. A rule
that never fires gains exactly 0 in every resample: its p-value is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import stats

from pulse_assets.rules.language import Rule, condition_expr, to_expr

OPS = ("*=", "+=", "-=")


@dataclass(frozen=True)
class RuleScore:
    index: int
    fired_rows: int
    rmse_base: float
    rmse_rule: float
    mae_base: float
    mae_rule: float
    r2_base: float
    r2_rule: float
    improvement: float
    ci_low: float
    ci_high: float
    p_value: float
    accepted: bool
    """The interval's lower bound is above zero (no correction for testing many rules)."""

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, float)}


def block_bootstrap_counts(n: int, resamples: int, block: int, seed: int) -> np.ndarray:
    """(resamples, n) counts: how often each row is drawn in each moving-block resample."""
    rng = np.random.default_rng(seed)
    block = max(1, min(block, n))
    blocks = -(-n // block)
    starts = rng.integers(0, n - block + 1, size=(resamples, blocks))
    rows = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(resamples, -1)[:, :n]
    flat = rows + (np.arange(resamples) * n)[:, None]
    return (
        np.bincount(flat.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    )


@dataclass(frozen=True)
class RuleArrays:
    """Rules of one label on ``n`` rows: where each condition holds, each adjustment's value,
    and each operation (an index into OPS)."""

    condition: np.ndarray  # (k, n) bool
    values: np.ndarray  # (k, n) float64
    ops: np.ndarray  # (k,) int

    def apply(self, forecast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(adjusted, fired), both (k, n): each rule applied alone to ``forecast`` ((n,) or
        (k, n)); where the adjusted value is not finite the rule does not fire."""
        ops = self.ops[:, None]
        changed = np.where(
            ops == 0,
            forecast * self.values,
            np.where(ops == 1, forecast + self.values, forecast - self.values),
        )
        fired = self.condition & np.isfinite(changed)
        return np.where(fired, changed, forecast), fired

    def take(self, indices: Sequence[int]) -> RuleArrays:
        rows = list(indices)
        return RuleArrays(self.condition[rows], self.values[rows], self.ops[rows])


def chain(
    arrays: RuleArrays, forecast: np.ndarray, order: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``forecast`` (n,) with the rules ``order`` applied one after another, as they apply in
    force: (adjusted (n,), fired (k, n), all False for rules left out)."""
    current = forecast
    fired = np.zeros(arrays.condition.shape, dtype=bool)
    for index in order:
        adjusted, hit = arrays.take([index]).apply(current)
        current, fired[index] = adjusted[0], hit[0]
    return current, fired


def rule_arrays(frame: pl.DataFrame, rules: Sequence[Rule]) -> RuleArrays:
    """Every rule's condition and adjustment value on each row of ``frame``, in one select."""
    if not rules:
        empty = np.zeros((0, frame.height))
        return RuleArrays(empty.astype(bool), empty, np.zeros(0, dtype=int))
    computed = frame.with_columns(
        *[condition_expr(rule).alias(f"__m{i}") for i, rule in enumerate(rules)],
        *[to_expr(rule.adjustment.value).alias(f"__v{i}") for i, rule in enumerate(rules)],
    )
    condition = np.vstack(
        [computed.get_column(f"__m{i}").to_numpy() for i in range(len(rules))]
    ).astype(bool)
    values = np.vstack(
        [computed.get_column(f"__v{i}").cast(pl.Float64).to_numpy() for i in range(len(rules))]
    ).astype(np.float64)
    ops = np.array([OPS.index(rule.adjustment.op) for rule in rules])
    return RuleArrays(condition, values, ops)


def usable_rows(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows of ``frame`` (sorted by date) with a finite forecast and actual of ``label``."""
    forecast, actual = pl.col(f"forecast_{label}"), pl.col(f"actual_{label}")
    return frame.sort("date").filter((forecast.is_finite() & actual.is_finite()).fill_null(False))


@dataclass(frozen=True)
class GainTest:
    """RMSE improvement of each of k alternatives over a base forecast on the same days."""

    gain: np.ndarray  # (k,)
    ci_low: np.ndarray
    ci_high: np.ndarray
    p_value: np.ndarray


def gain_test(
    base_se: np.ndarray, other_se: np.ndarray, counts: np.ndarray, confidence: float
) -> GainTest:
    """Paired block-bootstrap test of ``RMSE(base) - RMSE(other)`` for each row of
    ``other_se`` (k, n) against ``base_se`` (n,), with ``counts`` (B, n) resamples."""
    n = len(base_se)
    base_sse = counts @ base_se
    # through the difference, an alternative equal to the base gains exactly 0 everywhere
    other_sse = base_sse[:, None] + counts @ (other_se - base_se).T
    gains = np.sqrt(base_sse / n)[:, None] - np.sqrt(np.maximum(other_sse, 0.0) / n)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(gains, [tail, 100 - tail], axis=0)
    point = np.sqrt(base_se.mean()) - np.sqrt(other_se.mean(axis=1))
    spread = gains.std(axis=0, ddof=1)
    # no spread: the rule changes nothing (p = 1) or helps in every resample (p = 0)
    z = point / np.where(spread > 0, spread, 1.0)
    p_value = np.where(spread > 0, stats.norm.sf(z), np.where(point > 0, 0.0, 1.0))
    return GainTest(point, low, high, p_value)


def _r2(actual: np.ndarray, squared_errors: np.ndarray) -> np.ndarray:
    total = ((actual - actual.mean()) ** 2).sum()
    return (
        1 - squared_errors.sum(axis=-1) / total
        if total > 0
        else np.full(squared_errors.shape[:-1], np.nan)
    )


def evaluate_rules(
    frame: pl.DataFrame,
    rules: list[Rule],
    *,
    resamples: int = 1000,
    block: int = 5,
    confidence: float = 0.95,
    seed: int = 11,
) -> list[RuleScore]:
    """Score each rule alone against the model's forecast on ``frame`` (one row per day,
    with the rule features, ``forecast_<label>`` and ``actual_<label>``)."""
    if not rules:
        return []
    scores: list[RuleScore | None] = [None] * len(rules)
    for label in sorted({rule.adjustment.label for rule in rules}):
        members = [i for i, rule in enumerate(rules) if rule.adjustment.label == label]
        usable = usable_rows(frame, label)
        actual = usable.get_column(f"actual_{label}").to_numpy().astype(np.float64)
        base = usable.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
        adjusted, fired = rule_arrays(usable, [rules[i] for i in members]).apply(base)
        base_se, rule_se = (base - actual) ** 2, (adjusted - actual) ** 2
        if len(actual) == 0:
            nothing = np.full(len(members), np.nan)
            test = GainTest(nothing, nothing, nothing, np.ones(len(members)))
        else:
            counts = block_bootstrap_counts(len(actual), resamples, block, seed)
            test = gain_test(base_se, rule_se, counts, confidence)
        mae_rule = np.abs(adjusted - actual).mean(axis=1) if len(actual) else test.gain
        r2_base, r2_rule = float(_r2(actual, base_se)), _r2(actual, rule_se)
        for k, i in enumerate(members):
            scores[i] = RuleScore(
                index=i,
                fired_rows=int(fired[k].sum()),
                rmse_base=float(np.sqrt(base_se.mean())) if len(actual) else float("nan"),
                rmse_rule=float(np.sqrt(rule_se[k].mean())) if len(actual) else float("nan"),
                mae_base=float(np.abs(base - actual).mean()) if len(actual) else float("nan"),
                mae_rule=float(mae_rule[k]),
                r2_base=r2_base,
                r2_rule=float(r2_rule[k]),
                improvement=float(test.gain[k]),
                ci_low=float(test.ci_low[k]),
                ci_high=float(test.ci_high[k]),
                p_value=float(test.p_value[k]),
                accepted=bool(test.ci_low[k] > 0),
            )
    return [score for score in scores if score is not None]


@dataclass(frozen=True)
class Conflict:
    first: int
    second: int
    label: str
    overlap_rows: int


def conflicts(frame: pl.DataFrame, rules: list[Rule]) -> list[Conflict]:
    """Rules on the same label whose conditions hold on common rows with opposite effects."""
    if len(rules) < 2:
        return []
    masks = rule_arrays(frame, rules).condition.astype(np.float32)
    overlap = masks @ masks.T
    labels = np.array([rule.adjustment.label for rule in rules])
    signs = np.array([rule.sign() for rule in rules])
    clash = (labels[:, None] == labels[None, :]) & (signs[:, None] * signs[None, :] < 0)
    clash &= np.triu(overlap > 0, k=1)
    return [
        Conflict(int(i), int(j), str(labels[i]), int(overlap[i, j]))
        for i, j in zip(*np.nonzero(clash), strict=True)
    ]


def select_rules(
    frame: pl.DataFrame,
    rules: list[Rule],
    candidates: list[int],
    max_rules: int,
    min_gain: float = 0.0,
    fixed: Sequence[int] = (),
) -> list[int]:
    """Greedy forward selection: with the ``fixed`` rules applied first (in order), add the
    candidate that lowers the combined RMSE most, in order, skipping candidates in conflict
    with a fixed or chosen rule; stop at ``max_rules`` chosen or when none helps by more than
    ``min_gain``. The combined RMSE is the root of the summed per-label MSEs over the rows
    where each label's forecast and actual are known; rules apply one after another."""
    pool = list(fixed) + [i for i in candidates if i not in fixed]
    clashes = {(c.first, c.second) for c in conflicts(frame, [rules[i] for i in pool])}
    blocked = {(pool[a], pool[b]) for a, b in clashes} | {(pool[b], pool[a]) for a, b in clashes}
    state: dict[str, tuple[np.ndarray, np.ndarray, RuleArrays, list[int]]] = {}
    for label in sorted({rules[i].adjustment.label for i in pool}):
        usable = usable_rows(frame, label)
        members = [i for i in pool if rules[i].adjustment.label == label]
        current = usable.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
        arrays = rule_arrays(usable, [rules[i] for i in members])
        for i in fixed:
            if i in members:
                current = arrays.take([members.index(i)]).apply(current)[0][0]
        state[label] = (
            current,
            usable.get_column(f"actual_{label}").to_numpy().astype(np.float64),
            arrays,
            members,
        )
    mse = {
        label: float(((c - a) ** 2).mean()) if len(a) else 0.0
        for label, (c, a, _, _) in state.items()
    }
    chosen: list[int] = []
    while len(chosen) < max_rules:
        in_set = [*fixed, *chosen]
        options = [
            i for i in candidates if i not in in_set and not any((i, c) in blocked for c in in_set)
        ]
        if not options:
            break
        trials: dict[int, float] = {}
        for label, (current, actual, arrays, members) in state.items():
            mine = [i for i in options if rules[i].adjustment.label == label]
            if not mine or not len(actual):
                continue
            adjusted, _ = arrays.take([members.index(i) for i in mine]).apply(current)
            others = sum(v for k, v in mse.items() if k != label)
            for k, i in enumerate(mine):
                trials[i] = (others + float(((adjusted[k] - actual) ** 2).mean())) ** 0.5
        if not trials:
            break
        best = min(trials, key=lambda i: (trials[i], i))
        if sum(mse.values()) ** 0.5 - trials[best] <= min_gain:
            break
        label = rules[best].adjustment.label
        current, actual, arrays, members = state[label]
        current = arrays.take([members.index(best)]).apply(current)[0][0]
        state[label] = (current, actual, arrays, members)
        mse[label] = float(((current - actual) ** 2).mean())
        chosen.append(best)
    return chosen
