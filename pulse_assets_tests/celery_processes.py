"""Celery worker processes for the tests and bench/celery_bench.py: find a worker's children,
stop a worker, delete a queue (Linux /proc, the real broker)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def descendants(parent: int) -> set[int]:
    """Every descendant of process ``parent``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {parent}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def stop_worker(worker: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Warm shutdown (SIGTERM: finish the task at hand), then kill its group if it hangs."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)


def delete_queue(broker: str, queue: str) -> None:
    """Purge and delete ``queue`` and its exchange on ``broker``."""
    from kombu import Connection

    with Connection(broker, connect_timeout=5) as connection:
        channel = connection.default_channel
        channel.queue_purge(queue)
        channel.queue_delete(queue)
        channel.exchange_delete(queue)
