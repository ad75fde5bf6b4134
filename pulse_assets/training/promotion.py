"""Should the challenger become champion? Compared on the same held-out window."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    figures: dict[str, float | str | None]


def decide(
    metric: str, challenger: float, champion: float | None, min_improvement: float
) -> PromotionDecision:
    """Lower is better for every metric offered; ``min_improvement`` is relative (0.02 = 2%)."""
    if champion is None:
        return PromotionDecision(
            True,
            "first model: no champion to beat",
            {"metric": metric, "challenger": challenger, "champion": None},
        )
    needed = champion * (1 - min_improvement)
    improvement = (champion - challenger) / champion if champion else 0.0
    figures: dict[str, float | str | None] = {
        "metric": metric,
        "challenger": challenger,
        "champion": champion,
        "relative_improvement": improvement,
        "required_improvement": min_improvement,
    }
    if challenger < needed:
        return PromotionDecision(
            True,
            f"{metric} {challenger:.6g} beats champion {champion:.6g} "
            f"by {improvement:.2%} (needed {min_improvement:.2%})",
            figures,
        )
    return PromotionDecision(
        False,
        f"{metric} {challenger:.6g} does not beat champion {champion:.6g} "
        f"by {min_improvement:.2%} (improvement {improvement:.2%})",
        figures,
    )
