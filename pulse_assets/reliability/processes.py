"""Is the process that ran something still alive? Read from the OS (Linux /proc), no Dagster.

Pids are only meaningful on the host that ran the process, and are reused: a pid whose
process started after the thing it should have run is not that process.
"""

from __future__ import annotations

import os
from pathlib import Path

# A pid reused by a process started this long after the run started is not the run's process.
PID_REUSE_SLACK_S = 2.0


def linux_process(pid: int) -> tuple[str, float] | None:
    """State letter and start time (epoch seconds) from /proc, or None where /proc is absent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except FileNotFoundError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = int(fields[19])
    return fields[0], int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")


def process_gone(pid: int, started_at: float) -> bool:
    """True when no process ``pid`` that could be the one started before ``started_at`` lives."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    if not Path("/proc").is_dir():
        return False
    try:
        found = linux_process(pid)
    except (OSError, ValueError, IndexError, StopIteration):
        return False
    if found is None:
        return True  # gone between the two looks
    state, process_started = found
    return state in ("Z", "X") or process_started > started_at + PID_REUSE_SLACK_S
