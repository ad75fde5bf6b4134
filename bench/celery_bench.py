"""The ``entities`` job on 1 against 2 Celery workers (dagster-celery, RabbitMQ on 127.0.0.1).

Data: real births per US state and day (mosaicData/Birthdays), the 51 entities of
``entities.entities`` × ``--days`` days from ``--first`` (default 10 days of March 1988): one
run per entity over the days (raw rows, then feature rows: two steps a run), as a backfill
split by entity launches them. Each arm starts from a fresh PostgreSQL database (the
production profile's Dagster instance, ``DAGSTER_EVENT_BATCH_SIZE=100``) and a fresh store in
which the 28 days before ``--first`` are ingested beforehand (not timed: the features read
them). Then ``--orchestrators`` processes (default 8, standing in for the run launcher: each
imports the code once, then executes its share of the runs one after another with
``execution.executor: celery``) start together on a signal; the wall time runs from the
signal to the last run's end. Every worker has ``--concurrency 1`` and preloads the code
(``-I pulse_assets.definitions``), as in production. Both arms must store the same feature
rows. Peak memory: each orchestrator's (ru_maxrss) and each worker process's (VmHWM).

    python bench/celery_bench.py [--days 10] [--orchestrators 8] [--first 1988-03-01]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _measure import peak_rss_mb  # noqa: E402
from event_storage_bench import PG_HOST, PG_PORT, PG_USER, create_database, drop_database  # noqa: E402

from pulse_assets_tests.celery_processes import delete_queue, descendants, stop_worker  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
BIN = Path(sys.executable).parent
WORKERS = (1, 2)
WORKER_START_S = 180


# --- inside an orchestrator or the warm-up process ------------------------------------------


def warm_up(first: str) -> dict[str, Any]:
    """Raw rows of every entity for the trailing days before ``first``, in process."""
    import dagster as dg

    from pulse_assets.config import load_settings
    from pulse_assets.definitions import build_resources
    from pulse_assets.defs.entities import build_entity_assets, cell_key, raw_entity_key
    from pulse_assets.defs.partitions import range_tags

    settings = load_settings()
    config = settings.entities
    start = date.fromisoformat(first) - timedelta(days=config.trailing_days)
    last = date.fromisoformat(first) - timedelta(days=1)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            build_entity_assets(config, settings.quality),
            selection=[raw_entity_key(config)],
            resources=build_resources(settings),
            instance=instance,
            tags=range_tags(
                cell_key(start, config.entities[0]), cell_key(last, config.entities[-1])
            ),
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
        )
    return {"success": result.success, "peak_mb": peak_rss_mb()}


def orchestrate(
    entities: list[str], first: str, days: int, ready: Path, go: Path
) -> dict[str, Any]:
    """Import, say ready, wait for the signal, then one ``entities`` run per entity."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from pulse_assets.defs.entities import ENTITIES_JOB, cell_key
    from pulse_assets.defs.partitions import range_tags

    job = ReconstructableRepository.for_module(
        "pulse_assets.definitions", "defs", working_directory=str(ROOT)
    ).get_reconstructable_job(ENTITIES_JOB)
    job.get_definition()  # load the code before the clock starts
    start = date.fromisoformat(first)
    last = start + timedelta(days=days - 1)
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    ready.write_text("ready")
    while not go.exists():
        time.sleep(0.02)
    cpu_before = cpu_seconds_self()
    walls = []
    with dg.DagsterInstance.get() as instance:
        for entity in entities:
            began = time.perf_counter()
            tags = range_tags(cell_key(start, entity), cell_key(last, entity))
            with dg.execute_job(job, instance, run_config=quiet, tags=tags) as result:
                if not result.success:
                    raise RuntimeError(f"the run of {entity} failed: {result.run_id}")
            walls.append(time.perf_counter() - began)
    return {
        "runs": len(walls),
        "run_walls_s": walls,
        "cpu_s": cpu_seconds_self() - cpu_before,
        "peak_mb": peak_rss_mb(),
    }


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the driver -----------------------------------------------------------------------------


def write_settings(home: Path, queue: str) -> Path:
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "pulse.yaml").read_text())
    raw["store"] = {"root": str(home / "store")}
    raw["sql"] = {"url": f"sqlite:///{home / 'pulse.db'}"}
    raw["training"]["tracking"] = {"uri": f"sqlite:///{home / 'mlflow.db'}"}
    raw["execution"] = {"executor": "celery", "celery": {"queue": queue}}
    path = home / "pulse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def arm_env(home: Path, database: str, queue: str) -> dict[str, str]:
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(
        ROOT / "configs" / "deploy" / "production" / "dagster.yaml", dagster_home / "dagster.yaml"
    )
    env = os.environ | {
        "PULSE_CONFIG": str(write_settings(home, queue)),
        "PULSE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_EVENT_BATCH_SIZE": "100",
        "PGHOST": PG_HOST,
        "PGPORT": PG_PORT,
        "PGUSER": PG_USER,
        "PGDATABASE": database,
        "PULSE_CELERY_BROKER": BROKER,
    }
    env.pop("PULSE_PROFILE", None)
    return env


def phase_command(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def last_json(output: str) -> dict[str, Any]:
    return json.loads(output.strip().splitlines()[-1])


def start_worker(env: dict[str, str], queue: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    command = [str(BIN / "celery"), "-A", "pulse_assets.defs.celery_worker", "worker"]
    command += ["--concurrency", "1", "-n", f"{name}@%h", "-I", "pulse_assets.definitions"]
    command += ["--without-mingle", "--without-gossip", "--without-heartbeat", "-l", "INFO"]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(queue: str, count: int) -> None:
    """Until ``count`` workers of this arm (node names hold the queue) answer a ping."""
    from celery import Celery  # type: ignore[import-untyped]

    control = Celery(broker=BROKER).control
    deadline = time.monotonic() + WORKER_START_S
    while time.monotonic() < deadline:
        answers = control.ping(timeout=1.0) or []
        if len([a for a in answers if any(queue in name for name in a)]) >= count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} worker(s) on {queue} did not answer in {WORKER_START_S} s")


def peak_of(pids: set[int]) -> dict[int, float]:
    """VmHWM (peak resident memory) of each process, MiB."""
    peaks = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1]) / 1024
    return peaks


TASK_DONE = re.compile(r"Task execute_plan\[[0-9a-f-]+\] succeeded in ([0-9.]+)s")


def task_time(logs: list[Path]) -> tuple[int, float]:
    """Steps the workers ran and the sum of their durations (Celery logs each at INFO)."""
    durations = [float(m) for log in logs for m in TASK_DONE.findall(log.read_text())]
    return len(durations), sum(durations)


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of processes ``pids`` so far (Linux /proc), seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


SERVICES = ("postgres", "beam.smp")  # PostgreSQL's processes, RabbitMQ's Erlang VM


def services_cpu() -> float:
    """CPU seconds of PostgreSQL and RabbitMQ so far, ended backends included (they count in
    the postmaster's children time): an estimate, shared with anything else they serve."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        if name in SERVICES:
            fields = text.rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / ticks


def stored_features(home: Path) -> dict[str, bytes]:
    """The feature rows of every cell, as values (Parquet bytes may differ in metadata)."""
    import polars as pl

    folder = home / "store" / "entities" / "births_features"
    return {
        path.name: pl.read_parquet(path).write_csv().encode()
        for path in sorted(folder.glob("*.parquet"))
    }


def run_arm(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix=f"celery_bench_{workers}_"))
    database = create_database()
    queue = f"pulse-bench-{uuid.uuid4().hex[:8]}"
    env = arm_env(home, database, queue)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for n in range(workers):
            started.append(start_worker(env, queue, f"{queue}-{n}", home / f"worker{n}.log"))
        warm = subprocess.run(
            phase_command("--phase", "warmup", "--first", args.first),
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if warm.returncode != 0 or not last_json(warm.stdout)["success"]:
            raise RuntimeError(f"warm-up failed:\n{warm.stderr[-3000:]}")
        wait_ready(queue, workers)
        trees = set().union(*({worker.pid} | descendants(worker.pid) for worker in started))
        workers_cpu = cpu_seconds(trees)
        result = timed_runs(env, home, args)
        result["workers_cpu_s"] = cpu_seconds(trees) - workers_cpu
        result["tasks"], result["workers_busy_s"] = task_time(
            [home / f"worker{n}.log" for n in range(workers)]
        )
        result["worker_peaks_mb"] = [
            max(peak_of({worker.pid} | descendants(worker.pid)).values(), default=0.0)
            for worker in started
        ]
        result["features"] = stored_features(home)
        return result | {"workers": workers}
    finally:
        for worker in started:
            stop_worker(worker, timeout_s=60)
        delete_queue(BROKER, queue)
        drop_database(database)
        shutil.rmtree(home, ignore_errors=True)


def timed_runs(env: dict[str, str], home: Path, args: argparse.Namespace) -> dict[str, Any]:
    from pulse_assets.config import load_settings

    entities = load_settings(env["PULSE_CONFIG"]).entities.entities
    shares = [entities[k :: args.orchestrators] for k in range(args.orchestrators)]
    go = home / "go"
    processes = []
    for k, share in enumerate(shares):
        ready = home / f"ready{k}"
        command = phase_command(
            "--phase",
            "orchestrate",
            "--first",
            args.first,
            "--days",
            str(args.days),
            "--entities",
            ",".join(share),
            "--ready",
            str(ready),
            "--go",
            str(go),
        )
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        processes.append((process, ready))
    while not all(ready.exists() for _, ready in processes):
        if any(process.poll() is not None for process, _ in processes):
            raise RuntimeError("an orchestrator exited before the start")
        time.sleep(0.05)
    machine, services = machine_cpu(), services_cpu()
    began = time.perf_counter()
    go.write_text("go")
    outputs = [process.communicate() for process, _ in processes]
    wall = time.perf_counter() - began
    busy, total = (after - before for after, before in zip(machine_cpu(), machine, strict=True))
    services = services_cpu() - services
    for (process, _), (_out, err) in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"an orchestrator failed:\n{err[-3000:]}")
    stats = [last_json(out) for out, _ in outputs]
    run_walls = [w for s in stats for w in s["run_walls_s"]]
    return {
        "wall_s": wall,
        "runs": len(run_walls),
        "median_run_s": statistics.median(run_walls),
        "orchestrator_peaks_mb": [s["peak_mb"] for s in stats],
        "orchestrators_cpu_s": sum(s["cpu_s"] for s in stats),
        "machine_busy": busy / total,
        "services_cpu_s": services,
    }


def machine_cpu() -> tuple[int, int]:
    """Busy and total jiffies of all cores so far (/proc/stat), every process counted."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = results[0]
    print(
        f"entities job: {base['runs']} runs (one per entity) x {args.days} days from "
        f"{args.first}, raw + features per run, {args.orchestrators} orchestrators, Celery "
        f"workers with concurrency 1, PostgreSQL instance, {os.cpu_count()} CPU cores"
    )
    print(
        f"{'workers':>7} {'wall s':>8} {'cells/s':>8} {'median run s':>13} {'speed-up':>9} "
        f"{'steps':>6} {'busy s':>7} {'CPU s workers':>14} {'CPU s orchestr.':>16} "
        f"{'CPU s PG+MQ':>12} {'machine CPU':>12} "
        f"{'worker peak MiB':>16} "
        f"{'orchestrator peak MiB':>22}"
    )
    cells = base["runs"] * args.days
    for r in results:
        workers_mb = ", ".join(f"{m:.0f}" for m in r["worker_peaks_mb"])
        orchestrators_mb = max(r["orchestrator_peaks_mb"])
        print(
            f"{r['workers']:>7} {r['wall_s']:>8.1f} {cells / r['wall_s']:>8.1f} "
            f"{r['median_run_s']:>13.2f} {base['wall_s'] / r['wall_s']:>8.2f}x "
            f"{r['tasks']:>6} {r['workers_busy_s']:>7.1f} "
            f"{r['workers_cpu_s']:>14.1f} {r['orchestrators_cpu_s']:>16.1f} "
            f"{r['services_cpu_s']:>12.1f} {r['machine_busy']:>11.0%} "
            f"{workers_mb:>16} {orchestrators_mb:>22.0f}"
        )
    print(
        "busy s: the steps' durations summed over the workers (Celery's own timing); "
        "PG+MQ: PostgreSQL's and RabbitMQ's processes (an estimate); "
        "machine CPU: all cores' busy share in the window, every process; "
        f"CPU s: user + system time in the timed window (the machine has {os.cpu_count()} cores "
        "x the wall; PostgreSQL and RabbitMQ use the rest); driver process peak: "
        f"{peak_rss_mb():.0f} MiB; both arms stored the same feature rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--first", default="1988-03-01")
    parser.add_argument("--orchestrators", type=int, default=8)
    parser.add_argument("--phase", choices=("warmup", "orchestrate"))
    parser.add_argument("--entities", default="")
    parser.add_argument("--ready", default="")
    parser.add_argument("--go", default="")
    args = parser.parse_args()
    if args.phase == "warmup":
        print(json.dumps(warm_up(args.first)))
        return
    if args.phase == "orchestrate":
        share = args.entities.split(",")
        print(
            json.dumps(orchestrate(share, args.first, args.days, Path(args.ready), Path(args.go)))
        )
        return
    results = [run_arm(workers, args) for workers in WORKERS]
    if results[0].pop("features") != results[1].pop("features"):
        raise RuntimeError("1 and 2 workers stored different feature rows")
    print_table(results, args)


if __name__ == "__main__":
    main()
