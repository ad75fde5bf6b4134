"""The plan's StatisticalAnomalyDetector: is this epoch's loss unusual for recent epochs?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pulse_assets.config import MonitorConfig


@dataclass(frozen=True)
class Anomaly:
    epoch: int
    value: float
    score: float
    method: str


def anomaly_score(value: float, history: list[float], method: str) -> float | None:
    """z-score or IQR distance of ``value`` from ``history``; None while history is too short.

    A Python float, not a numpy scalar: the score goes into checkpoints, which hold plain
    types only (a numpy scalar would make a checkpoint unloadable under weights_only).
    """
    if len(history) < 3:
        return None
    recent = np.asarray(history, dtype=np.float64)
    if method == "z-score":
        spread = float(recent.std(ddof=1))
        return 0.0 if spread == 0 else abs(value - float(recent.mean())) / spread
    q1, q3 = (float(q) for q in np.percentile(recent, [25, 75]))
    iqr = q3 - q1
    if iqr == 0:
        return 0.0
    below, above = q1 - value, value - q3
    return max(below, above, 0.0) / iqr


class LossMonitor:
    """Flags an epoch whose validation loss scores above the threshold against recent epochs."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.anomalies: list[Anomaly] = []

    def observe(self, epoch: int, value: float, history: list[float]) -> Anomaly | None:
        recent = history[-self.config.window :]
        score = anomaly_score(value, recent, self.config.method)
        if score is None or score <= self.config.threshold:
            return None
        anomaly = Anomaly(epoch=epoch, value=value, score=score, method=self.config.method)
        self.anomalies.append(anomaly)
        return anomaly
