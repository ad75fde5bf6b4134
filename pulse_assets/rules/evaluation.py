"""Evaluate many rules at once on later retrodiction windows (the plan's RecursiveRuleEvaluator).

For R rules over n windows: one polars ``select`` computes every rule's adjusted forecast,
squared errors form an (R, n) array, and the paired block bootstrap draws B resamples as a
(B, n) matrix of counts, so every resample's RMSE for every rule is one matrix product
(B, n) @ (n, R). Baseline and rule share each resample (paired). A rule is accepted when the
lower bound of its RMSE-improvement interval is above zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pulse_assets.rules.language import Rule, adjusted_expr, condition_expr


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
    accepted: bool

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
    """Score each rule alone against the model's forecast on ``frame`` (one row per window,
    sorted by date, with the rule features, ``forecast_<label>`` and ``actual_<label>``)."""
    if not rules:
        return []
    frame = frame.sort("date")
    scores: list[RuleScore | None] = [None] * len(rules)
    for label in sorted({rule.adjustment.label for rule in rules}):
        members = [i for i, rule in enumerate(rules) if rule.adjustment.label == label]
        usable = frame.filter(
            pl.col(f"actual_{label}").is_not_null() & pl.col(f"forecast_{label}").is_not_null()
        )
        forecast = pl.col(f"forecast_{label}")
        computed = usable.select(
            *[adjusted_expr(rules[i], forecast).alias(f"a{i}") for i in members],
            *[condition_expr(rules[i]).alias(f"m{i}") for i in members],
        )
        actual = usable.get_column(f"actual_{label}").to_numpy().astype(np.float64)
        base = usable.get_column(f"forecast_{label}").to_numpy().astype(np.float64)
        adjusted = np.column_stack(
            [computed.get_column(f"a{i}").to_numpy() for i in members]
        ).T.astype(np.float64)
        adjusted = np.where(np.isfinite(adjusted), adjusted, base)
        fired = np.column_stack([computed.get_column(f"m{i}").to_numpy() for i in members]).T
        base_se, rule_se = (base - actual) ** 2, (adjusted - actual) ** 2
        counts = block_bootstrap_counts(len(actual), resamples, block, seed)
        base_sse = counts @ base_se
        # through the difference, a rule that never fires gains exactly 0 in every resample
        rule_sse = base_sse[:, None] + counts @ (rule_se - base_se).T
        gain = np.sqrt(base_sse / len(actual))[:, None] - np.sqrt(
            np.maximum(rule_sse, 0.0) / len(actual)
        )
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(gain, [tail, 100 - tail], axis=0)
        point_base, point_rule = np.sqrt(base_se.mean()), np.sqrt(rule_se.mean(axis=1))
        mae_rule = np.abs(adjusted - actual).mean(axis=1)
        r2_base, r2_rule = float(_r2(actual, base_se)), _r2(actual, rule_se)
        for k, i in enumerate(members):
            scores[i] = RuleScore(
                index=i,
                fired_rows=int(fired[k].sum()),
                rmse_base=float(point_base),
                rmse_rule=float(point_rule[k]),
                mae_base=float(np.abs(base - actual).mean()),
                mae_rule=float(mae_rule[k]),
                r2_base=r2_base,
                r2_rule=float(r2_rule[k]),
                improvement=float(point_base - point_rule[k]),
                ci_low=float(low[k]),
                ci_high=float(high[k]),
                accepted=bool(low[k] > 0),
            )
    return [score for score in scores if score is not None]


@dataclass(frozen=True)
class Conflict:
    first: int
    second: int
    label: str
    overlap_rows: int


def conflicts(frame: pl.DataFrame, rules: list[Rule]) -> list[Conflict]:
    """Rules on the same label whose conditions fire on common rows with opposite effects."""
    masks = frame.select(condition_expr(rule).alias(str(i)) for i, rule in enumerate(rules))
    found = []
    for i, a in enumerate(rules):
        for j in range(i + 1, len(rules)):
            b = rules[j]
            if a.adjustment.label != b.adjustment.label or a.sign() * b.sign() >= 0:
                continue
            overlap = int((masks[str(i)] & masks[str(j)]).sum())
            if overlap:
                found.append(Conflict(i, j, a.adjustment.label, overlap))
    return found


def select_rules(
    frame: pl.DataFrame,
    rules: list[Rule],
    candidates: list[int],
    max_rules: int,
    min_gain: float = 0.0,
) -> list[int]:
    """Greedy forward selection: add the candidate that lowers the combined RMSE most, in
    order, skipping candidates in conflict with one already chosen; stop when none helps."""
    clashes = {(c.first, c.second) for c in conflicts(frame, rules)}
    clashes |= {(b, a) for a, b in clashes}
    chosen: list[int] = []

    def rmse(selection: list[int]) -> float:
        total = 0.0
        for label in {rules[i].adjustment.label for i in candidates}:
            usable = frame.filter(pl.col(f"actual_{label}").is_not_null())
            adjusted = pl.col(f"forecast_{label}")
            for i in selection:
                if rules[i].adjustment.label == label:
                    adjusted = adjusted_expr(rules[i], adjusted)
            errors = usable.select((adjusted - pl.col(f"actual_{label}")).pow(2).mean()).item()
            total += float(errors)
        return total**0.5

    current = rmse(chosen)
    while len(chosen) < max_rules:
        options = [
            i for i in candidates if i not in chosen and not any((i, c) in clashes for c in chosen)
        ]
        if not options:
            break
        trials = {i: rmse([*chosen, i]) for i in options}
        best = min(trials, key=lambda i: (trials[i], i))
        if current - trials[best] <= min_gain:
            break
        chosen.append(best)
        current = trials[best]
    return chosen
