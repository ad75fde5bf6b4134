"""Rule-language fuzz rate: generated rules round-tripped per second, against parsing alone.

Rules: ``--rules`` random rule texts from a seeded generator (AND/OR/NOT conditions over
comparisons of arithmetic, function calls and unary minus; literals drawn across the whole
float range, subnormals included, written exactly with ``repr``), made before the clock
starts. Each phase runs in its own process (``_measure.run_phase``):

- baseline: ``parse(text)`` alone, what every reader of a stored rule pays;
- round trip: ``parse(text)``, its canonical text, ``parse`` of that, and a check that both
  give the same canonical text and fingerprint: the property the tests assert, at full rate.

Every generated rule must round-trip; a failure stops the benchmark with the rule's text.

    python bench/rule_language_bench.py [--rules 10000] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

from pulse_assets.rules.language import parse  # noqa: E402

NAMES = ["vol_20d_z", "tweet_count_z", "polls_margin", "rsi_7", "momentum_5", "ma_gap_10"]
FUNCTIONS = [("abs", 1), ("min", 2), ("max", 3), ("clip", 3)]


def literal(rng: random.Random) -> str:
    """A finite float from anywhere in the range: ordinary, huge, tiny or subnormal."""
    kind = rng.random()
    if kind < 0.6:
        return repr(round(rng.uniform(-5, 5), rng.randint(0, 6)))
    exponent = rng.randint(-323, 307)
    return repr(float(f"{rng.uniform(1, 9.99):.15f}e{exponent}"))


def expression(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth <= 0 or roll < 0.35:
        return rng.choice(NAMES) if rng.random() < 0.6 else literal(rng)
    if roll < 0.7:
        op = rng.choice("+-*/")
        return f"({expression(rng, depth - 1)} {op} {expression(rng, depth - 1)})"
    if roll < 0.8:
        return f"-{expression(rng, depth - 1)}"
    name, arity = rng.choice(FUNCTIONS)
    return f"{name}({', '.join(expression(rng, depth - 1) for _ in range(arity))})"


def condition(rng: random.Random, depth: int) -> str:
    roll = rng.random()
    if depth <= 0 or roll < 0.4:
        op = rng.choice([">", ">=", "<", "<=", "==", "!="])
        return f"{expression(rng, 2)} {op} {expression(rng, 2)}"
    if roll < 0.85:
        keyword = rng.choice(["AND", "OR", "and", "or"])
        return f"({condition(rng, depth - 1)}) {keyword} ({condition(rng, depth - 1)})"
    return f"NOT ({condition(rng, depth - 1)})"


def rule_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [
        f"IF {condition(rng, 3)} THEN sp500_abs_return_next "
        f"{rng.choice(['*=', '+=', '-='])} {expression(rng, 1)}"
        for _ in range(count)
    ]


def parse_all(texts: list[str]) -> None:
    for text in texts:
        parse(text)


def round_trip_all(texts: list[str]) -> None:
    for text in texts:
        rule = parse(text)
        canonical = rule.canonical()
        again = parse(canonical)
        if again.canonical() != canonical or again.fingerprint != rule.fingerprint:
            raise SystemExit(f"rule does not round-trip: {text!r} -> {canonical!r}")


TRACED_RULES = 2_000


def phase(name: str, count: int, seed: int) -> None:
    """Timed untraced; then the first TRACED_RULES once more under tracemalloc (which slows
    Python several times) for the working-memory peak: each rule is dropped once checked,
    so the peak does not grow with the count."""
    texts = rule_texts(count, seed)
    work = parse_all if name == "parse" else round_trip_all
    started = time.perf_counter()
    work(texts)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    work(texts[:TRACED_RULES])
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    report(
        {
            "seconds": seconds,
            "rules_per_s": count / seconds,
            "peak_mib": peak,
            "rss_mib": peak_rss_mb(),
            "mean_chars": sum(map(len, texts)) / count,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--phase", choices=["parse", "round-trip"])
    args = parser.parse_args()
    if args.phase:
        phase(args.phase, args.rules, args.seed)
        return
    script = Path(__file__).resolve()
    options = ("--rules", str(args.rules), "--seed", str(args.seed))
    baseline = run_phase(script, "parse", *options)
    ours = run_phase(script, "round-trip", *options)
    print(
        f"rule language: {args.rules} generated rules (mean {baseline['mean_chars']:.0f} "
        "characters; literals across the whole float range, subnormals included)"
    )
    print(
        f"baseline, parse alone: {baseline['rules_per_s']:,.0f} rules/s "
        f"({baseline['seconds']:.2f} s, working memory peak {baseline['peak_mib']:.1f} MiB (tracemalloc), "
        f"process peak {baseline['rss_mib']:.0f} MiB)"
    )
    print(
        f"round trip (parse, canonical, parse, compare): {ours['rules_per_s']:,.0f} rules/s "
        f"({ours['seconds']:.2f} s, working memory peak {ours['peak_mib']:.1f} MiB (tracemalloc), "
        f"process peak {ours['rss_mib']:.0f} MiB); every rule round-tripped"
    )
    print(
        f"round trip / parse alone: {ours['seconds'] / baseline['seconds']:.2f}x the time "
        f"({ours['rules_per_s'] / baseline['rules_per_s']:.2f}x the rate)"
    )


if __name__ == "__main__":
    main()
