"""When does drift warrant a retrain? When it persists, and once per episode."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pulse_assets.drift.statistics import persistent


@dataclass(frozen=True)
class DriftEpisode:
    """Consecutive checks that share drifted features; ``start`` names the episode."""

    start: date
    latest: date
    features: tuple[str, ...]
    checks: int


def current_episode(checks: list[tuple[date, set[str]]], persistence: int) -> DriftEpisode | None:
    """The drift episode the latest check belongs to, if it has lasted ``persistence`` checks.

    ``checks`` are (day, drifted features) in time order. An episode is the longest run of
    checks ending at the latest one whose drifted features keep a common part; its start is
    stable while the episode lasts, so a run key built from it starts one retrain per episode.
    """
    if not checks:
        return None
    common = set(checks[-1][1])
    start_index = len(checks) - 1
    for index in range(len(checks) - 2, -1, -1):
        shared = common & checks[index][1]
        if not shared:
            break
        common, start_index = shared, index
    length = len(checks) - start_index
    if not common or length < persistence:
        return None
    confirmed = persistent([features for _, features in checks], persistence)
    return DriftEpisode(
        start=checks[start_index][0],
        latest=checks[-1][0],
        features=tuple(sorted(confirmed)),
        checks=length,
    )
