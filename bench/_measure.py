"""Run one benchmark phase in a fresh process and report its wall time and peak memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phase(script: Path, phase: str, *args: str) -> dict:
    """Run ``script --phase phase`` in its own interpreter; it prints one JSON line last."""
    done = subprocess.run(
        [sys.executable, str(script), "--phase", phase, *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmark phase {phase!r} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(phase_result: dict) -> None:
    print(json.dumps(phase_result))
