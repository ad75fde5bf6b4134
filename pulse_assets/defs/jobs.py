"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

MAIN_JOB = "pulse_main"


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    main = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups("raw", "features"),
        description="Ingest every source and build features and labels over a partition range.",
    )
    return [main]
