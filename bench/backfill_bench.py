"""Backfill of retrodiction rounds: one run over the range of rounds against one run per round.

Both run the same asset (evaluation/retrodiction, partitioned by monthly round) on the same
Dagster instance kind (SQLite storage in a temporary DAGSTER_HOME) over the same model rounds.
Data: the real embedded sources, ingested for 2014-2016 by the domain code; the model rounds
(small GRU, the tests' settings) are materialized first, in one run, and are not timed.

Orchestration = wall time - time inside the run's steps (the asset body, its input reads and
output writes, from Dagster's step stats). Printed as a share of wall time.

    python bench/backfill_bench.py [--rounds 12] [--per-partition-rounds 12]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb  # noqa: E402

FIRST_ROUND = date(2016, 1, 1)  # 12 monthly rounds to the end of the data, 2016-12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-partition-rounds", type=int, default=12)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp())
    os.environ["PULSE_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    (home / "dagster").mkdir()
    shutil.copyfile(
        Path(__file__).resolve().parent.parent / "dagster.yaml", home / "dagster" / "dagster.yaml"
    )

    import dagster as dg

    from pulse_assets.config import Settings
    from pulse_assets.definitions import build_assets, build_resources
    from pulse_assets.defs.evaluation import RETRODICTION_KEY
    from pulse_assets.defs.partitions import range_tags, round_partitions
    from pulse_assets.defs.training import MODEL_KEY
    from pulse_assets_tests.conftest import SMALL_ROUNDS, populate_store, small_config

    settings = Settings.model_validate(
        small_config(
            home,
            partitions={"start": "2014-01-01", "end": "2017-01-01", "timezone": "UTC"},
            rounds=SMALL_ROUNDS | {"start": FIRST_ROUND.isoformat()},
        )
    )
    populate_store(settings, date(2014, 1, 1), date(2016, 12, 31))
    resources = build_resources(settings)
    assets = build_assets(settings)
    all_rounds = round_partitions(settings).get_partition_keys()
    if args.rounds > len(all_rounds) or args.per_partition_rounds > args.rounds:
        parser.error(f"--rounds at most {len(all_rounds)}, --per-partition-rounds at most that")
    keys = all_rounds[-args.rounds :]
    per_keys = keys[-args.per_partition_rounds :]
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}

    def run(
        key: dg.AssetKey,
        instance: dg.DagsterInstance,
        tags: dict[str, str] | None = None,
        partition: str | None = None,
    ) -> str:
        result = dg.materialize(
            assets,
            selection=[key],
            resources=resources,
            instance=instance,
            tags=tags,
            partition_key=partition,
            run_config=quiet,
        )
        return result.run_id

    def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
        return sum(
            (step.end_time or 0.0) - (step.start_time or 0.0)
            for run_id in run_ids
            for step in instance.get_run_step_stats(run_id)
        )

    with dg.DagsterInstance.get() as instance:
        run(MODEL_KEY, instance, range_tags(all_rounds[0], all_rounds[-1]))
        started = time.perf_counter()
        single_id = run(RETRODICTION_KEY, instance, range_tags(keys[0], keys[-1]))
        single_wall = time.perf_counter() - started
        single_steps = step_seconds(instance, [single_id])

        run_ids = []
        started = time.perf_counter()
        for key in per_keys:
            run_ids.append(run(RETRODICTION_KEY, instance, partition=key))
        per_wall = time.perf_counter() - started
        per_steps = step_seconds(instance, run_ids)
    per_scaled = per_wall * len(keys) / len(per_keys)
    overhead = single_wall - single_steps
    print(
        f"retrodiction backfill of {len(keys)} monthly rounds {keys[0]}..{keys[-1]} "
        "(real data, GRU rounds)"
    )
    print(
        f"one run over the range:   {single_wall:.1f} s wall; in its step {single_steps:.2f} s, "
        f"orchestration {overhead:.1f} s = {overhead / single_wall:.0%} of wall"
    )
    print(
        f"one run per round:        {per_wall:.1f} s for {len(per_keys)} runs "
        f"({per_wall / len(per_keys):.2f} s a run; in their steps {per_steps:.1f} s)"
        + ("" if len(per_keys) == len(keys) else f", {per_scaled:.0f} s scaled to {len(keys)}")
    )
    print(f"speed-up of the single run: {per_scaled / single_wall:.1f}x")
    print(f"peak memory of this process: {peak_rss_mb():.0f} MiB")
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
