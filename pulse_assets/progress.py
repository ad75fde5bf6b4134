"""How far a long piece of work is: done of total, elapsed, and a naive ETA.

One home for the progress line that range runs write to the Dagster run log (rounds of the
walk-forward, of retrodiction) and that the demo prints while a run goes on."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``: short, readable, no fractions below a minute."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


@dataclass
class Countdown:
    """``done`` of ``total`` units, started at ``started`` (perf_counter seconds). The ETA
    assumes the remaining units cost what the finished ones did on average."""

    what: str
    total: int
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def advance(self, units: int = 1) -> str:
        """Count ``units`` more as done and return the progress line."""
        self.done = min(self.total, self.done + units)
        return self.line()

    def eta_seconds(self) -> float | None:
        if self.done == 0:
            return None
        elapsed = time.perf_counter() - self.started
        return elapsed / self.done * (self.total - self.done)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        share = self.done / self.total if self.total else 1.0
        eta = self.eta_seconds()
        tail = "" if eta is None or self.done == self.total else f", ETA {duration(eta)}"
        return (
            f"{self.what} {self.done}/{self.total} ({share:.0%}), {duration(elapsed)} elapsed{tail}"
        )
