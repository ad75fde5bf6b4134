"""The embedded real data as the benchmarks read it: features and labels built by the domain
code from the three sources (what the raw and features assets write)."""

from __future__ import annotations

from datetime import date

import polars as pl


def real_features_and_labels(
    raw_first: date, features_first: date, labels_first: date, end: date
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Daily features from ``features_first`` and labels from ``labels_first`` to ``end``
    (exclusive), from the sources ingested over ``raw_first..end``, default config."""
    from pulse_assets.config import Settings
    from pulse_assets.features import build_daily_features, build_labels
    from pulse_assets.ingest import ingest_window, load_source
    from pulse_assets_tests.conftest import default_config

    settings = Settings.model_validate(default_config())
    frames = {
        name: ingest_window(
            load_source(name, source.plugin, source.params), source.data_schema, raw_first, end
        ).good
        for name, source in settings.sources.items()
    }
    features = build_daily_features(frames, settings.features, features_first, end).frame
    labels = build_labels(
        frames, settings.features.labels, settings.features.spine, labels_first, end
    )
    return features, labels
