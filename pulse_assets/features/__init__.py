"""The feature pipeline (the plan's FeatureEngineeringPipeline) in polars lazy frames."""

from pulse_assets.features.pipeline import build_daily_features, build_labels, feature_columns

__all__ = ["build_daily_features", "build_labels", "feature_columns"]
