"""The rule loop across rounds: 60 monthly rounds x 1,000 candidates each, the domain code
(``pulse_assets.rules.rounds.decide_round``: vectorized tests, Holm, backward elimination,
greedy selection) against a plain per-round, per-candidate loop, each in its own process.

Data: the real embedded sources (2010-2017) through the default feature pipeline; the model's
forecast is the naive persistence forecast of the real label (|r| of the day before), so every
error is real. Rounds 2013-01..2017-12, each deciding from the days known before it within 730
days. Candidates: 1,000 a round, deterministic, over the real feature columns, with thresholds
at quantiles of that round's mining days (so they too come from before the round); their texts
are made once, untimed (the miner's stand-in), and both loops parse them back.

Plain loop: for each round, each candidate: the rule evaluated row by row on its tree, the
rules kept in force applied row by row before it, then the block-bootstrap resamples one by
one (the same resample counts as the domain code), a p-value, Holm by sorting, the greedy
selection and the retirements by per-row loops. It runs on the first ``--loop-rounds`` rounds
and is scaled to all rounds (its cost is linear in rounds: each reads the same 730 days); on
those rounds both must take the same decisions, which is checked and printed.

    python bench/rules_rounds_bench.py [--rounds 60] [--candidates 1000] [--loop-rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

from pulse_assets.rules import language as L  # noqa: E402

SCRIPT = Path(__file__).resolve()
LABEL = "y"
FIRST_ROUND = date(2013, 1, 1)
RESAMPLES = 1000


def phase_input(folder: Path) -> dict:
    """Real features and labels 2011-2017; forecast = yesterday's |r| (naive persistence)."""
    from _real_data import real_features_and_labels

    from pulse_assets.config import load_settings

    settings = load_settings()
    features, labels = real_features_and_labels(
        date(2010, 1, 1), date(2011, 1, 1), date(2010, 12, 1), date(2018, 1, 1)
    )
    label = "label_" + settings.training.labels[0]
    known = labels.sort("date").select(
        "date",
        pl.col(label).shift(1).alias(f"forecast_{LABEL}"),
        pl.col(label).alias(f"actual_{LABEL}"),
    )
    history = (
        features.join(known, on="date")
        .drop_nulls([f"forecast_{LABEL}", f"actual_{LABEL}"])
        .with_columns(
            pl.lit(False).alias("in_sample"),
            pl.lit("naive").alias("model_version"),
            (pl.col(f"forecast_{LABEL}") - pl.col(f"actual_{LABEL}")).alias(f"error_{LABEL}"),
        )
        .sort("date")
    )
    history.write_parquet(folder / "history.parquet")
    return {
        "rows": history.height,
        "first": str(history["date"].min()),
        "last": str(history["date"].max()),
    }


@dataclass(frozen=True)
class Round:
    """A monthly round (``pulse_assets.rules.rounds.RoundWindow``'s shape)."""

    key: str
    start: date
    end: date


def rounds(count: int) -> list[Round]:
    windows = []
    for k in range(count):
        months = FIRST_ROUND.year * 12 + FIRST_ROUND.month - 1 + k
        start = date(months // 12, months % 12 + 1, 1)
        end = date((months + 1) // 12, (months + 1) % 12 + 1, 1)
        windows.append(Round(start.isoformat(), start, end))
    return windows


def candidate_texts(mining: pl.DataFrame, features: list[str], count: int, seed: int) -> list[str]:
    """``count`` rules ``IF a > q1 AND b <= q2 THEN y <op>`` over the mining days' quantiles."""
    rng = np.random.default_rng(seed)
    columns = {name: mining[name].to_numpy() for name in features}
    texts = []
    while len(texts) < count:
        first, second = rng.choice(features, 2, replace=False)
        q1 = np.quantile(columns[first], rng.uniform(0.1, 0.9))
        q2 = np.quantile(columns[second], rng.uniform(0.1, 0.9))
        op = rng.choice(["*= 0.9", "*= 1.1", "+= 0.0005", "-= 0.0005"])
        texts.append(f"IF {first} > {q1:.6g} AND {second} <= {q2:.6g} THEN {LABEL} {op}")
    return texts


def write_candidates(folder: Path, windows: list[Round], count: int) -> None:
    """Each round's candidate texts, made once from its mining days (untimed: the miner's
    stand-in); both loops read them back through the parser, as rules come from a store."""
    from pulse_assets.config import RulesConfig
    from pulse_assets.rules.rounds import round_slices

    history, features = setup(folder)
    texts = {
        w.key: candidate_texts(
            round_slices(history, w, RulesConfig(), [LABEL]).mining, features, count, seed=k
        )
        for k, w in enumerate(windows)
    }
    (folder / "candidates.json").write_text(json.dumps(texts))


def candidates(folder: Path, key: str) -> list[L.Rule]:
    return [L.parse(text) for text in json.loads((folder / "candidates.json").read_text())[key]]


def setup(folder: Path) -> tuple[pl.DataFrame, list[str]]:
    history = pl.read_parquet(folder / "history.parquet")
    skip = {"date", "in_sample", "model_version"} | {
        f"{k}_{LABEL}" for k in ("forecast", "actual", "error")
    }
    return history, [c for c in history.columns if c not in skip]


# --- ours: the domain code ---------------------------------------------------------------------


def ours(history: pl.DataFrame, folder: Path, windows: list[Round], config) -> list:
    from pulse_assets.rules.rounds import Candidate, decide_round, round_slices

    in_force: list = []
    retired_on: dict = {}
    decisions = []
    for window in windows:
        slices = round_slices(history, window, config, [LABEL])
        rules = candidates(folder, window.key)
        pool = [Candidate(f"{window.key}/{i}", 1, "bench", r) for i, r in enumerate(rules)]
        decision = decide_round(
            slices, window, pool, in_force, config.evaluation, [LABEL], "", retired_on
        )
        for retention in decision.retention:
            if not retention.kept:
                retired_on[retention.active.entry.rule_id] = window.start
        in_force = decision.in_force()
        decisions.append(
            {
                "accepted": sorted(j.candidate.rule_id for j in decision.judged if j.accepted),
                "activated": [a.entry.rule_id for a in decision.activated],
                "retired": sorted(r.active.entry.rule_id for r in decision.retention if not r.kept),
            }
        )
    return decisions


# --- the plain loop ----------------------------------------------------------------------------


def value(node, row: dict) -> float | bool:
    if isinstance(node, L.Number):
        return node.value
    if isinstance(node, L.Feature):
        return row[node.name]
    if isinstance(node, L.Arithmetic):
        a, b = value(node.left, row), value(node.right, row)
        return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan")}[node.op]
    if isinstance(node, L.Compare):
        a, b = value(node.left, row), value(node.right, row)
        return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "==": a == b, "!=": a != b}[
            node.op
        ]
    if isinstance(node, L.Logical):
        results = [value(o, row) for o in node.operands]
        return all(results) if node.op == "AND" else any(results)
    raise TypeError(f"the plain loop does not evaluate {type(node).__name__}")


def apply_one(rule: L.Rule, row: dict, forecast: float) -> tuple[float, bool]:
    if not value(rule.condition, row):
        return forecast, False
    amount = value(rule.adjustment.value, row)
    changed = {"*=": forecast * amount, "+=": forecast + amount, "-=": forecast - amount}[
        rule.adjustment.op
    ]
    return (changed, True) if np.isfinite(changed) else (forecast, False)


def apply_all(rules: list[L.Rule], row: dict) -> float:
    forecast = row[f"forecast_{LABEL}"]
    for rule in rules:
        forecast, _ = apply_one(rule, row, forecast)
    return forecast


def p_value(without: list[float], with_: list[float], actual: list[float], counts) -> float:
    """One-sided p of RMSE(without) - RMSE(with) > 0, resample by resample."""
    from scipy import stats

    n = len(actual)
    base = [(w - a) ** 2 for w, a in zip(without, actual, strict=True)]
    other = [(w - a) ** 2 for w, a in zip(with_, actual, strict=True)]
    gains = []
    for weights in counts:
        gains.append(
            np.sqrt(np.dot(weights, base) / n) - np.sqrt(max(np.dot(weights, other), 0.0) / n)
        )
    point = np.sqrt(np.mean(base)) - np.sqrt(np.mean(other))
    spread = float(np.std(gains, ddof=1))
    return float(stats.norm.sf(point / spread)) if spread > 0 else float(point <= 0)


def holm(p_values: list[float], alpha: float) -> list[bool]:
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    accepted, running = [False] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p_values[i] * (len(p_values) - rank)))
        accepted[i] = running <= alpha
    return accepted


def mse(rules: list[L.Rule], rows: list[dict]) -> float:
    return float(np.mean([(apply_all(rules, r) - r[f"actual_{LABEL}"]) ** 2 for r in rows]))


def plain_round(past, acceptance, pool, in_force, retired_on, config, window) -> dict:
    from pulse_assets.rules.evaluation import block_bootstrap_counts, conflicts

    ev = config.evaluation
    counts_for = {}

    def counts(n: int):
        if n not in counts_for:
            counts_for[n] = block_bootstrap_counts(n, ev.resamples, ev.block_days, ev.seed)
        return counts_for[n]

    current = list(in_force)  # backward elimination, per rule, per row
    retired = []
    while True:
        failing = []
        for active in current:
            days = [r for r in past if r["date"] >= active["activated_on"]]
            if len(days) < ev.retire_after_days:
                continue
            others = [a["rule"] for a in current if a is not active]
            everyone = [a["rule"] for a in current]
            p = p_value(
                [apply_all(others, r) for r in days],
                [apply_all(everyone, r) for r in days],
                [r[f"actual_{LABEL}"] for r in days],
                counts(len(days)),
            )
            if p >= ev.alpha:
                failing.append((p, active["id"]))
        if not failing:
            break
        _, worst = max(failing)
        retired.append(worst)
        current = [a for a in current if a["id"] != worst]
    kept = [a["rule"] for a in current]
    fixed = [apply_all(kept, r) for r in acceptance]
    actual = [r[f"actual_{LABEL}"] for r in acceptance]
    p_values = []
    for _, rule in pool:  # each candidate: per row, then per resample
        with_ = [apply_one(rule, r, f)[0] for r, f in zip(acceptance, fixed, strict=True)]
        p_values.append(p_value(fixed, with_, actual, counts(len(acceptance))))
    passed = holm(p_values, ev.alpha)
    accepted = [pool[i] for i, ok in enumerate(passed) if ok]
    frame = pl.DataFrame(acceptance)
    chosen: list = []
    every = kept + [rule for _, rule in accepted]
    clashes = {(c.first, c.second) for c in conflicts(frame, every)}
    clashes |= {(b, a) for a, b in clashes}
    room = max(0, ev.max_active - len(kept))
    best_now = mse(kept, acceptance)
    while len(chosen) < room:
        trials = {}
        for k, (_, rule) in enumerate(accepted):
            index = len(kept) + k
            taken = list(range(len(kept))) + [len(kept) + c for c in chosen]
            if k in chosen or any((index, t) in clashes for t in taken):
                continue
            trials[k] = mse(kept + [accepted[c][1] for c in chosen] + [rule], acceptance)
        if not trials:
            break
        best = min(trials, key=lambda k: (trials[k] ** 0.5, len(kept) + k))
        if best_now**0.5 - trials[best] ** 0.5 <= 0:
            break
        chosen.append(best)
        best_now = trials[best]
    return {
        "accepted": sorted(rule_id for rule_id, _ in accepted),
        "activated": [accepted[c][0] for c in chosen],
        "retired": sorted(retired),
        "kept": current,
        "chosen": [
            {"id": accepted[c][0], "rule": accepted[c][1], "activated_on": window.start}
            for c in chosen
        ],
    }


def plain(history: pl.DataFrame, folder: Path, windows: list[Round], config) -> list:
    from pulse_assets.rules.rounds import round_slices

    in_force: list = []
    decisions = []
    for window in windows:
        slices = round_slices(history, window, config, [LABEL])
        rules = candidates(folder, window.key)
        pool = [(f"{window.key}/{i}", r) for i, r in enumerate(rules)]
        decided = plain_round(
            slices.past.to_dicts(),
            slices.acceptance.to_dicts(),
            pool,
            in_force,
            {},
            config,
            window,
        )
        in_force = decided.pop("kept") + decided.pop("chosen")
        decisions.append(decided)
    return decisions


def phase_timed(folder: Path, which: str, rounds_run: int) -> dict:
    from pulse_assets.config import RuleEvaluationConfig, RulesConfig

    history, features = setup(folder)
    config = RulesConfig(evaluation=RuleEvaluationConfig(resamples=RESAMPLES))
    windows = rounds(rounds_run)
    run = ours if which == "ours" else plain
    before = peak_rss_mb()
    started = time.perf_counter()
    decisions = run(history, folder, windows, config)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    traced = None
    if which == "ours":
        tracemalloc.start()  # one more run, untimed: tracing slows every allocation
        run(history, folder, windows[:3], config)
        traced = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    (folder / f"{which}.json").write_text(json.dumps(decisions))
    return {
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak,
        "traced_peak_mb": traced,
        "features": len(features),
        "accepted": sum(len(d["accepted"]) for d in decisions),
        "activated": sum(len(d["activated"]) for d in decisions),
        "retired": sum(len(d["retired"]) for d in decisions),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--loop-rounds", type=int, default=2)
    parser.add_argument("--phase", choices=["input", "ours", "loop"])
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.phase == "input":
        data = phase_input(Path(args.folder))
        write_candidates(Path(args.folder), rounds(args.rounds), args.candidates)
        return report(data)
    if args.phase:
        count = args.rounds if args.phase == "ours" else args.loop_rounds
        return report(phase_timed(Path(args.folder), args.phase, count))
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        common = ["--folder", name, "--candidates", str(args.candidates)]
        data = run_phase(SCRIPT, "input", *common, "--rounds", str(args.rounds))
        mine = run_phase(SCRIPT, "ours", *common, "--rounds", str(args.rounds))
        theirs = run_phase(SCRIPT, "loop", *common, "--loop-rounds", str(args.loop_rounds))
        ours_decisions = json.loads((folder / "ours.json").read_text())
        loop_decisions = json.loads((folder / "loop.json").read_text())
    same = ours_decisions[: args.loop_rounds] == loop_decisions
    scale = args.rounds / args.loop_rounds
    print(
        f"data: {data['rows']} REAL daily rows {data['first']}..{data['last']} (default features, "
        f"{mine['features']} columns; forecast = naive persistence of the real |r|); "
        f"{args.rounds} monthly rounds from {FIRST_ROUND} x {args.candidates} candidates, "
        f"{RESAMPLES} block-bootstrap resamples, Holm"
    )
    print(
        f"ours (domain code, vectorized): {mine['seconds']:.1f} s for {args.rounds} rounds "
        f"({mine['seconds'] / args.rounds:.2f} s a round); process peak {mine['peak_rss_mb']:.0f} "
        f"MiB ({mine['rss_before_mb']:.0f} MiB before the rounds); traced peak of 3 rounds "
        f"{mine['traced_peak_mb']:.0f} MiB (numpy and Python; polars' buffers untraced); "
        f"{mine['accepted']} accepted, {mine['activated']} activated, {mine['retired']} retired"
    )
    print(
        f"plain per-round, per-candidate loop: {theirs['seconds']:.1f} s for {args.loop_rounds} "
        f"rounds, scaled x{scale:.0f} to {theirs['seconds'] * scale:.0f} s; process peak "
        f"{theirs['peak_rss_mb']:.0f} MiB ({theirs['rss_before_mb']:.0f} MiB before)"
    )
    print(
        f"speed-up {theirs['seconds'] * scale / mine['seconds']:.0f}x; same decisions "
        f"(accepted, activated, retired) on the first {args.loop_rounds} rounds: {same}"
    )


if __name__ == "__main__":
    main()
