"""Curriculum scoring and weighting: 20 years of daily rows in 200 scenarios, the domain code
(vectorized: polars group-bys, numpy over all rows, one distance matrix) against a plain
per-scenario loop (each scenario's rows filtered, each row's bins looked up one by one, each
scenario's neighbours found by a loop), same math, same numbers, in the same run.

Data: REAL rows REPLICATED. The embedded sources (S&P 500, 2016 polls, tweets) through the
default feature pipeline give about 6.5 years of real daily feature rows (mid-2011 to 2017);
they are repeated with their dates shifted, end to end, and cut to the last 5,040 rows (20
years of 252 trading days). The scenarios are 200 consecutive blocks of those rows (about 25
trading days each, a scenario key being the block's first day). The champion's errors are
the naive persistence forecast of the real label (yesterday's |return| for tomorrow's) on
the last 252 rows: real errors, one year of them (12 monthly rounds).

Each approach runs in its own process (bench/_measure.py): wall time of the scoring and
weighting (the data already loaded), peak resident memory of the process, and the resident
memory before the timed part, so the difference is what the scoring itself needed.

    python bench/curriculum_bench.py [--years 20] [--scenarios 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import bisect
import sys
import tempfile
import time
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

SCRIPT = Path(__file__).resolve()
ERROR_DAYS = 252


def phase_input(folder: Path, years: int, scenarios: int) -> dict:
    """Real rows replicated to ``years`` x 252 rows, scenario blocks, naive errors: parquet."""
    from _real_data import real_features_and_labels

    from pulse_assets.config import load_settings

    settings = load_settings()
    features, labels = real_features_and_labels(
        date(2010, 1, 1), date(2011, 1, 1), date(2011, 1, 1), date(2018, 1, 1)
    )
    label = "label_" + settings.training.labels[0]
    real = features.join(labels.select("date", label), on="date").drop_nulls().sort("date")
    span = (real.get_column("date").max() - real.get_column("date").min()).days + 1  # type: ignore[operator]
    wanted = years * 252
    copies = -(-wanted // real.height)
    replicated = pl.concat(
        real.with_columns(pl.col("date") + timedelta(days=span * k)) for k in range(copies)
    ).tail(wanted)
    block = np.arange(wanted) * scenarios // wanted  # 0..scenarios-1, blocks of equal size
    starts = np.searchsorted(block, np.arange(scenarios))
    keys = replicated.get_column("date").to_numpy()[starts]
    replicated = replicated.with_columns(pl.Series("scenario", keys[block]))
    errors = (
        replicated.select(
            "date", pl.col(label).shift(1).alias("forecast"), pl.col(label).alias("actual")
        )
        .tail(ERROR_DAYS)
        .select("date", (pl.col("forecast") - pl.col("actual")).alias("error"))
    )
    replicated.drop(label).write_parquet(folder / "rows.parquet")
    errors.write_parquet(folder / "errors.parquet")
    return {
        "real_rows": real.height,
        "real_first": str(real.get_column("date").min()),
        "real_last": str(real.get_column("date").max()),
        "copies": copies,
        "rows": replicated.height,
        "scenarios": replicated.get_column("scenario").n_unique(),
        "error_days": errors.height,
    }


def load(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    rows = pl.read_parquet(folder / "rows.parquet")
    errors = pl.read_parquet(folder / "errors.parquet")
    features = [c for c in rows.columns if c not in ("date", "scenario")]
    return rows, errors, features


def ours(
    rows: pl.DataFrame, errors: pl.DataFrame, features: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The domain code, as round_curriculum runs it (scenarios given as blocks here)."""
    from pulse_assets.config import load_settings
    from pulse_assets.curriculum.analysis import analyze_errors
    from pulse_assets.curriculum.scenarios import describe_scenarios
    from pulse_assets.curriculum.scoring import scenario_scores
    from pulse_assets.curriculum.weights import scenario_weights

    settings = load_settings().curriculum
    scenarios = describe_scenarios(rows, settings.regimes)
    analysis = analyze_errors(errors, rows, features, settings.quantiles, settings.shrinkage_days)
    scored = scenario_scores(rows, scenarios, analysis, settings).frame
    score = scored.get_column("score").to_numpy()
    weights = scenario_weights(
        score, scenarios.get_column("rows").to_numpy().astype(np.float64), settings.max_weight_ratio
    )
    per_row = (
        rows.select("scenario")
        .join(
            scenarios.select("scenario", pl.Series("weight", weights)),
            on="scenario",
            how="left",
            maintain_order="left",
        )
        .get_column("weight")
        .to_numpy()
    )
    return score, per_row / per_row.mean()


def plain_loop(
    rows: pl.DataFrame, errors: pl.DataFrame, features: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The same numbers, one scenario (and within it one row) at a time."""
    from pulse_assets.config import load_settings

    settings = load_settings().curriculum
    regimes = settings.regimes
    columns = list(dict.fromkeys(r.column for r in regimes.values()))
    days = errors.join(rows, on="date")
    squared = (days.get_column("error") ** 2).to_numpy()
    mse = squared.mean()
    k = settings.shrinkage_days
    bins = {}
    for feature in features:
        values = days.get_column(feature).to_numpy()
        edges = np.unique(np.quantile(values, np.linspace(0, 1, settings.quantiles + 1)[1:-1]))
        ratios = []
        for b in range(len(edges) + 1):
            inside = [
                s
                for v, s in zip(values, squared, strict=True)
                if bisect.bisect_right(edges.tolist(), v) == b
            ]
            ratios.append((sum(inside) + k * mse) / (len(inside) + k) / mse if inside or k else 1.0)
        bins[feature] = (edges.tolist(), ratios)
    covered = {c: (days.get_column(c).min(), days.get_column(c).max()) for c in columns}
    q = settings.edge_quantile
    edge_bounds = {
        c: (
            np.quantile(rows.get_column(c).to_numpy(), q),
            np.quantile(rows.get_column(c).to_numpy(), 1 - q),
        )
        for c in columns
    }
    keys = sorted(rows.get_column("scenario").unique().to_list())
    raw = {name: [] for name in ("error_reduction", "coverage_expansion", "edge_case_exposure")}
    descriptors, counts = [], []
    for key in keys:
        sub = rows.filter(pl.col("scenario") == key).sort("date")
        counts.append(sub.height)
        described = []
        for regime in regimes.values():
            v = sub.get_column(regime.column).to_numpy()
            described.append(
                {
                    "mean": lambda v=v: v.mean(),
                    "mean_abs": lambda v=v: np.abs(v).mean(),
                    "min": lambda v=v: v.min(),
                    "max": lambda v=v: v.max(),
                    "std": lambda v=v: v.std(),
                    "change": lambda v=v: v[-1] - v[0],
                }[regime.stat]()
            )
        descriptors.append(described)
        excess, outside, edge = [], [], []
        for row in sub.iter_rows(named=True):
            ratios = [bins[f][1][bisect.bisect_right(bins[f][0], row[f])] for f in features]
            excess.append(sum(ratios) / len(ratios) - 1.0)
            outside.append(
                sum(not (covered[c][0] <= row[c] <= covered[c][1]) for c in columns) / len(columns)
            )
            edge.append(
                any(not (edge_bounds[c][0] <= row[c] <= edge_bounds[c][1]) for c in columns)
            )
        raw["error_reduction"].append(sum(excess) / len(excess))
        raw["coverage_expansion"].append(sum(outside) / len(outside))
        raw["edge_case_exposure"].append(sum(edge) / len(edge))
    matrix = np.array(descriptors)
    spread = matrix.std(axis=0)
    scaled = (matrix - matrix.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    novelty = []
    for i in range(len(keys)):
        distances = sorted(
            float(np.sqrt(((scaled[i] - scaled[j]) ** 2).sum())) for j in range(len(keys)) if j != i
        )
        novelty.append(
            sum(distances[: settings.novelty_neighbours])
            / min(settings.novelty_neighbours, len(distances))
        )
    raw["novelty"] = novelty
    score = np.zeros(len(keys))
    for name, values in raw.items():
        low, high = min(values), max(values)
        if high > low:
            score += settings.score_weights.get(name, 0.0) * (np.array(values) - low) / (high - low)
    low, high = score.min(), score.max()
    weight = {
        key: 1 + (settings.max_weight_ratio - 1) * (s - low) / (high - low)
        for key, s in zip(keys, score, strict=True)
    }
    per_row = np.array([weight[key] for key in rows.get_column("scenario").to_list()])
    return score, per_row / per_row.mean()


def phase_timed(folder: Path, which: str, repeats: int) -> dict:
    import pulse_assets.curriculum  # noqa: F401  (both phases import the same: same baseline)

    rows, errors, features = load(folder)
    run = ours if which == "ours" else plain_loop
    before = peak_rss_mb()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        score, weights = run(rows, errors, features)
        times.append(time.perf_counter() - started)
    peak = peak_rss_mb()
    tracemalloc.start()  # one more run, untimed: tracing slows every allocation
    run(rows, errors, features)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    np.save(folder / f"{which}_score.npy", score)
    np.save(folder / f"{which}_weights.npy", weights)
    return {
        "best_s": min(times),
        "median_s": float(np.median(times)),
        "rss_before_mb": before,
        "traced_peak_mb": traced,
        "peak_rss_mb": peak,
        "features": len(features),
        "max_over_min_weight": float(weights.max() / weights.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--scenarios", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--phase", choices=["input", "ours", "loop"])
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.phase == "input":
        return report(phase_input(Path(args.folder), args.years, args.scenarios))
    if args.phase:
        return report(phase_timed(Path(args.folder), args.phase, args.repeats))
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        common = ["--folder", name, "--years", str(args.years), "--scenarios", str(args.scenarios)]
        data = run_phase(SCRIPT, "input", *common)
        mine = run_phase(SCRIPT, "ours", *common, "--repeats", str(args.repeats))
        theirs = run_phase(SCRIPT, "loop", *common, "--repeats", "1")
        same_scores = np.allclose(
            np.load(folder / "ours_score.npy"),
            np.load(folder / "loop_score.npy"),
            rtol=1e-9,
            atol=1e-12,
        )
        same_weights = np.allclose(
            np.load(folder / "ours_weights.npy"),
            np.load(folder / "loop_weights.npy"),
            rtol=1e-9,
            atol=1e-12,
        )
    print(
        f"data: REAL rows replicated: {data['real_rows']} real daily feature rows "
        f"({data['real_first']}..{data['real_last']}) x{data['copies']} with shifted dates, cut to "
        f"{data['rows']} rows (~{args.years} years), {data['scenarios']} scenarios (blocks of "
        f"consecutive rows), {mine['features']} analysis features, {data['error_days']} real "
        "error days (naive persistence forecast of the real label)"
    )
    print(
        f"ours (vectorized domain code): best {mine['best_s']:.3f} s, median {mine['median_s']:.3f} s "
        f"of {args.repeats}; process peak {mine['peak_rss_mb']:.0f} MiB "
        f"({mine['rss_before_mb']:.0f} MiB before scoring), traced peak "
        f"{mine['traced_peak_mb']:.1f} MiB (numpy and Python; polars' own buffers untraced)"
    )
    print(
        f"plain per-scenario loop: {theirs['best_s']:.2f} s; process peak "
        f"{theirs['peak_rss_mb']:.0f} MiB ({theirs['rss_before_mb']:.0f} MiB before scoring), "
        f"traced peak {theirs['traced_peak_mb']:.1f} MiB"
    )
    print(
        f"speed-up {theirs['best_s'] / mine['best_s']:.0f}x; same scores: {same_scores}, same "
        f"row weights: {same_weights}; max/min row weight {mine['max_over_min_weight']:.3f}"
    )


if __name__ == "__main__":
    main()
