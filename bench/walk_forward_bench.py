"""The walk-forward on the real data: monthly training rounds, warm start against cold start.

The embedded default config (``load_settings()``) in a temporary PULSE_HOME. Phase ``data``
ingests the three sources for 2010-2017 and builds features and labels by the domain code
(what the raw and features assets write). Then, each in its own process on its own registry
(MLflow, alias audit, checkpoints) over that store: the last ``--rounds`` monthly rounds up to
2017-12 as one run of models/forecast_model (timed: wall and peak memory), then the same rounds
of evaluation/retrodiction in one run (the champion of each day, out of sample), once with
``rounds.warm_start: true`` (the baseline here, the configured default) and once with false.

Per round, rounds 2 to N (the first is a cold start in both arms, and its time would hold
the step's start): seconds between consecutive rounds' observations in the model run (a
round's shadow decision, curriculum, training of the challenger and its uniform twin, and
registration), and the challenger's epochs and training seconds. The champion-of-the-day series of
both runs are compared out of sample by a two-sided Diebold-Mariano test (HLN-corrected) on
squared and absolute loss: a negative statistic means warm start's loss was lower.

    python bench/walk_forward_bench.py [--rounds 60]   # every round from 2013-01 on
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import dagster as dg
    import polars as pl

    from pulse_assets.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

SCRIPT = Path(__file__).resolve()
DATA_FIRST, DATA_LAST = date(2010, 1, 1), date(2017, 12, 31)
LAST_ROUND = date(2017, 12, 1)


def first_round(rounds: int) -> date:
    months = LAST_ROUND.year * 12 + LAST_ROUND.month - 1 - (rounds - 1)
    return date(months // 12, months % 12 + 1, 1)


def settings_for(home: Path, rounds: int, warm: bool, curriculum: bool = True) -> Settings:
    from pulse_assets.config import load_settings

    settings = load_settings()
    return settings.model_copy(
        update={
            "store": settings.store.model_copy(update={"root": str(home / "store")}),
            "rounds": settings.rounds.model_copy(
                update={"start": first_round(rounds), "warm_start": warm}
            ),
            "curriculum": settings.curriculum.model_copy(update={"enabled": curriculum}),
        }
    )


def phase_data(home: Path, rounds: int) -> dict:
    from pulse_assets_tests.conftest import populate_store

    os.environ["PULSE_HOME"] = str(home / "data")
    started = time.perf_counter()
    populate_store(settings_for(home, rounds, True), DATA_FIRST, DATA_LAST)
    return {"seconds": time.perf_counter() - started, "peak_mb": peak_rss_mb()}


def round_seconds(instance: dg.DagsterInstance, run_id: str) -> list[float]:
    """Seconds of each round after the first: between consecutive rounds' observations.

    The first round's time would also hold the step's start (reading eight years of feature
    and label partitions, opening the registry: seconds, once per run, not per round), and
    it is a cold start in both arms (there is no champion yet)."""
    import dagster as dg

    from pulse_assets.defs.training import MODEL_KEY

    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.ASSET_OBSERVATION}
    ).records
    stamps = sorted(  # a round is observed on the model and on its curriculum: count it once
        r.event_log_entry.timestamp
        for r in records
        if r.event_log_entry.dagster_event is not None
        and r.event_log_entry.dagster_event.asset_key == MODEL_KEY
    )
    return [later - earlier for earlier, later in zip(stamps, stamps[1:], strict=False)]


def phase_walk(home: Path, rounds: int, warm: bool, curriculum: bool = True) -> dict:
    name = ("warm" if warm else "cold") if curriculum else "uniform"
    pulse_home = home / name
    (pulse_home / "dagster").mkdir(parents=True)
    os.environ["PULSE_HOME"] = str(pulse_home)
    os.environ["DAGSTER_HOME"] = str(pulse_home / "dagster")
    shutil.copyfile(SCRIPT.parent.parent / "dagster.yaml", pulse_home / "dagster" / "dagster.yaml")

    import dagster as dg

    from pulse_assets.definitions import build_assets, build_resources
    from pulse_assets.defs.evaluation import RETRODICTION_KEY
    from pulse_assets.defs.partitions import range_tags, round_partitions
    from pulse_assets.defs.training import MODEL_KEY
    from pulse_assets.storage import PartitionStore

    settings = settings_for(home, rounds, warm, curriculum)
    keys = round_partitions(settings).get_partition_keys()
    assert len(keys) == rounds, (keys[0], keys[-1], rounds)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    with dg.DagsterInstance.get() as instance:

        def run(key: dg.AssetKey) -> str:
            result = dg.materialize(
                build_assets(settings),
                selection=[key],
                resources=build_resources(settings),
                instance=instance,
                tags=range_tags(keys[0], keys[-1]),
                run_config=quiet,
            )
            return result.run_id

        started = time.perf_counter()
        model_run = run(MODEL_KEY)
        model_wall = time.perf_counter() - started
        peak = peak_rss_mb()
        per_round = round_seconds(instance, model_run)
        started = time.perf_counter()
        run(RETRODICTION_KEY)
        retro_wall = time.perf_counter() - started
    store = PartitionStore(home / "store")
    records = store.read("models/forecast_model", keys)
    retrodiction = store.read("evaluation/retrodiction", keys)
    retrodiction.write_parquet(home / f"retrodiction_{name}.parquet")
    return {
        "rounds": len(keys),
        "span": f"{keys[0]}..{keys[-1]}",
        "model_wall_s": model_wall,
        "model_peak_mb": peak,
        "retrodiction_wall_s": retro_wall,
        "round_seconds": per_round,
        # the first round is cold in both arms and its time holds the step's start: left out
        "epochs": records.get_column("epochs_run").to_list()[1:],
        "train_seconds": records.get_column("train_seconds").to_list()[1:],
        "versions": records.get_column("trained").sum(),
        "promotions": records.get_column("promoted").sum(),
    }


def rmse(errors: pl.Series) -> float:
    return float(np.sqrt(np.mean(errors.to_numpy() ** 2)))


def dm_lines(home: Path, label: str) -> list[str]:
    import polars as pl

    from pulse_assets.evaluation.significance import Loss, diebold_mariano

    actual, forecast = f"actual_{label}", f"forecast_{label}"
    warm, cold = (
        pl.read_parquet(home / f"retrodiction_{name}.parquet")
        .select("date", actual, pl.col(forecast).alias(name))
        .drop_nulls()
        for name in ("warm", "cold")
    )
    paired = warm.join(cold.drop(actual), on="date").sort("date")
    warm_errors = paired["warm"] - paired[actual]
    cold_errors = paired["cold"] - paired[actual]
    lines = [
        f"out of sample, {paired.height} days: champion-of-the-day RMSE warm "
        f"{rmse(warm_errors):.6f}, cold {rmse(cold_errors):.6f}"
    ]
    for loss in Loss:
        test = diebold_mariano(warm_errors, cold_errors, loss)
        lines.append(
            f"Diebold-Mariano warm vs cold, {loss.value} loss: statistic {test.statistic:+.3f}, "
            f"p = {test.p_value:.3f} (two-sided; negative: warm start's loss lower)"
        )
    return lines


def ablation_line(home: Path, label: str) -> str:
    """The curriculum's ablation: the warm walk-forward with the curriculum against the same
    with uniform weights (same data, config and seeds), both champion-of-the-day series."""
    import polars as pl

    from pulse_assets.cli import arm_errors
    from pulse_assets.curriculum.ablation import ablation

    arms = [
        arm_errors(pl.read_parquet(home / f"retrodiction_{name}.parquet"), label)
        for name in ("warm", "uniform")
    ]
    return ablation(*arms).verdict


def twin_line(home: Path, label: str) -> str:
    """The in-graph measure of the same question: each warm round's curriculum-weighted
    challenger against its uniform-weight twin (same warm start and seed), out of sample."""
    import polars as pl

    from pulse_assets.metrics.curriculum_effect import curriculum_effect

    effect = curriculum_effect(pl.read_parquet(home / "retrodiction_warm.parquet"), label)
    return f"each challenger against its uniform-weight twin: {effect.outcome}"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rounds",
        type=int,
        default=60,
        help="monthly rounds up to 2017-12 (60: every round from 2013-01)",
    )
    parser.add_argument("--phase", choices=["data", "warm", "cold", "uniform"])
    parser.add_argument("--home")
    args = parser.parse_args()
    if not 2 <= args.rounds <= 60:
        parser.error("--rounds: between 2 and 60 (2013-01..2017-12 holds 60)")
    if args.phase:
        home = Path(args.home)
        if args.phase == "data":
            report(phase_data(home, args.rounds))
        else:
            uniform = args.phase == "uniform"
            report(phase_walk(home, args.rounds, args.phase != "cold", curriculum=not uniform))
        return
    home = Path(tempfile.mkdtemp(prefix="pulse-walk-"))
    common = ["--home", str(home), "--rounds", str(args.rounds)]
    data = run_phase(SCRIPT, "data", *common)
    warm = run_phase(SCRIPT, "warm", *common)
    cold = run_phase(SCRIPT, "cold", *common)
    uniform = run_phase(SCRIPT, "uniform", *common)
    from pulse_assets.config import load_settings

    label = load_settings().training.labels[0]
    print(
        f"walk-forward over {warm['rounds']} monthly rounds {warm['span']} (real data, default config)"
    )
    print(f"ingest + features 2010-2017: {data['seconds']:.1f} s, peak {data['peak_mb']:.0f} MiB")
    for name, result in (("warm start (baseline)", warm), ("cold start", cold)):
        print(
            f"{name}: model rounds in one run {result['model_wall_s']:.1f} s wall, peak "
            f"{result['model_peak_mb']:.0f} MiB; {mean(result['round_seconds']):.2f} s a round, of "
            f"which training {mean(result['train_seconds']):.3f} s and "
            f"{mean(result['epochs']):.1f} epochs; {result['versions']} versions, "
            f"{result['promotions']} promotions; retrodiction run {result['retrodiction_wall_s']:.1f} s"
        )
    ratio = mean(cold["round_seconds"]) / mean(warm["round_seconds"])
    training = mean(cold["train_seconds"]) / mean(warm["train_seconds"])
    print(f"cold / warm seconds a round: {ratio:.2f}x; training alone: {training:.2f}x")
    for line in dm_lines(home, label):
        print(line)
    print(
        f"uniform weights (the ablation's arm, warm): {uniform['model_wall_s']:.1f} s wall, "
        f"{mean(uniform['round_seconds']):.2f} s a round"
    )
    print(ablation_line(home, label))
    print(twin_line(home, label))
    print(f"peak memory of this process: {peak_rss_mb():.0f} MiB")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
