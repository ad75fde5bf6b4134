"""The retrodiction curriculum (the plan's EnhancedRetrodictionCurriculum): round R's training
rows weighted by scenario, from the champions' out-of-sample errors before R."""

from pulse_assets.curriculum.ablation import Ablation, ablation
from pulse_assets.curriculum.analysis import ErrorAnalysis, analyze_errors, champion_errors
from pulse_assets.curriculum.scenarios import CurriculumError, describe_scenarios, window_rows
from pulse_assets.curriculum.weights import Curriculum, round_curriculum, scenario_weights

__all__ = [
    "Ablation",
    "Curriculum",
    "CurriculumError",
    "ErrorAnalysis",
    "ablation",
    "analyze_errors",
    "champion_errors",
    "describe_scenarios",
    "round_curriculum",
    "scenario_weights",
    "window_rows",
]
