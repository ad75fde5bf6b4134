"""Rule evaluation: 1,000 candidate rules x two years of daily windows x 1,000 bootstrap
resamples, vectorized against a per-rule, per-window loop in the plan's style.

Data: the real embedded sources (2016-2017) through the default feature pipeline; the
model's forecast is the naive persistence forecast of the real label, so every figure comes
from real data. Rules: 1,000 deterministic candidates over the real feature columns, with
thresholds at the columns' quantiles.

Plan style: for each rule, walk every window (a dict per row), evaluate the rule's tree on
it, then run 1,000 block-bootstrap resamples one by one. It runs on ``--plan-rules`` rules
and is scaled linearly to 1,000 (its cost is linear in rules); the scaling is printed.

    python bench/rules_bench.py [--rules 1000] [--plan-rules 100] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb  # noqa: E402

from pulse_assets.rules import language as L  # noqa: E402


def value(node, row):
    if isinstance(node, L.Number):
        return node.value
    if isinstance(node, L.Feature):
        return row[node.name]
    if isinstance(node, L.Negate):
        return -value(node.operand, row)
    if isinstance(node, L.Arithmetic):
        a, b = value(node.left, row), value(node.right, row)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan")}[node.op]
    if isinstance(node, L.Call):
        args = [value(a, row) for a in node.args]
        return {
            "abs": lambda: abs(args[0]),
            "min": lambda: min(args),
            "max": lambda: max(args),
            "clip": lambda: min(max(args[0], args[1]), args[2]),
        }[node.function]()
    if isinstance(node, L.Compare):
        a, b = value(node.left, row), value(node.right, row)
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "==": a == b, "!=": a != b}[
            node.op
        ]
    if isinstance(node, L.Not):
        return not value(node.operand, row)
    results = [value(o, row) for o in node.operands]
    return all(results) if node.op == "AND" else any(results)


def plan_style(
    rows: list[dict], rules: list[L.Rule], resamples: int, block: int, seed: int
) -> list[tuple[float, float]]:
    intervals = []
    rng = np.random.default_rng(seed)
    n = len(rows)
    for rule in rules:
        base, adjusted, actual = [], [], []
        for row in rows:
            forecast = row["forecast_y"]
            if value(rule.condition, row):
                delta = value(rule.adjustment.value, row)
                forecast = {"*=": forecast * delta, "+=": forecast + delta, "-=": forecast - delta}[
                    rule.adjustment.op
                ]
            base.append(row["forecast_y"])
            adjusted.append(forecast)
            actual.append(row["actual_y"])
        base_a, adjusted_a, actual_a = np.array(base), np.array(adjusted), np.array(actual)
        gains = []
        for _ in range(resamples):
            starts = rng.integers(0, n - block + 1, size=-(-n // block))
            index = (starts[:, None] + np.arange(block)).ravel()[:n]
            gains.append(
                np.sqrt(((base_a[index] - actual_a[index]) ** 2).mean())
                - np.sqrt(((adjusted_a[index] - actual_a[index]) ** 2).mean())
            )
        intervals.append(tuple(np.percentile(gains, [2.5, 97.5])))
    return intervals


def windows() -> pl.DataFrame:
    from _real_data import real_features_and_labels

    features, labels = real_features_and_labels(
        date(2014, 1, 1), date(2016, 1, 1), date(2015, 12, 1), date(2018, 1, 1)
    )
    known = labels.select(
        "date",
        pl.col("label_sp500_abs_return_next").alias("actual_y"),
        pl.col("label_sp500_abs_return_next").shift(1).alias("forecast_y"),
    )
    return features.join(known, on="date").drop_nulls(["actual_y", "forecast_y"]).sort("date")


def candidate_rules(frame: pl.DataFrame, count: int) -> list[L.Rule]:
    rng = np.random.default_rng(7)
    columns = [c for c in frame.columns if c not in ("date", "actual_y", "forecast_y")]
    rules = []
    while len(rules) < count:
        first, second = rng.choice(columns, 2, replace=False)
        q1, q2 = (
            np.quantile(frame[first], rng.uniform(0.1, 0.9)),
            np.quantile(frame[second], rng.uniform(0.1, 0.9)),
        )
        op = rng.choice(["*= 0.9", "*= 1.1", "+= 0.0005", "-= 0.0005"])
        text = f"IF {first} > {q1:.6g} AND {second} <= {q2:.6g} THEN y {op}"
        rules.append(L.parse(text))
    return rules


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--plan-rules", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    from pulse_assets.rules.evaluation import evaluate_rules

    frame = windows()
    rules = candidate_rules(frame, args.rules)
    tracemalloc.start()
    started = time.perf_counter()
    scores = evaluate_rules(frame, rules, resamples=args.resamples, block=5, seed=11)
    ours = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rows = frame.to_dicts()
    started = time.perf_counter()
    plan_style(rows, rules[: args.plan_rules], args.resamples, 5, 11)
    plan = (time.perf_counter() - started) * args.rules / args.plan_rules
    print(
        f"evaluate {args.rules} rules over {frame.height} real daily windows ({frame['date'].min()}..{frame['date'].max()}), "
        f"{args.resamples} block-bootstrap resamples each"
    )
    print(
        f"plan style (per rule, per window, per resample): {plan:.1f} s "
        f"(measured on {args.plan_rules} rules, scaled x{args.rules / args.plan_rules:.0f})"
    )
    print(
        f"ours (vectorized: one polars select, one matrix product per label): {ours:.2f} s, "
        f"working memory peak {peak:.0f} MiB (numpy, tracemalloc), process peak {peak_rss_mb():.0f} MiB"
    )
    print(
        f"speed-up: {plan / ours:.0f}x (target >= 20x); accepted {sum(s.accepted for s in scores)} of {len(scores)}"
    )


if __name__ == "__main__":
    main()
