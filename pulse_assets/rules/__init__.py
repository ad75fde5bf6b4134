"""Rules that adjust forecasts: language, generation, repository, evaluation (the plan's phase 3)."""
