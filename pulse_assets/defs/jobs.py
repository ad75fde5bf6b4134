"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

MAIN_JOB = "pulse_main"
EVALUATE_JOB = "evaluate"
RULES_JOB = "rules"


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    main = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups("raw", "features"),
        description="Ingest every source and build features and labels over a partition range.",
    )
    evaluate = dg.define_asset_job(
        EVALUATE_JOB,
        selection=dg.AssetSelection.groups("evaluation", "drift"),
        description="Retrodiction and drift checks of the champion over a partition range (a backfill).",
    )
    rules = dg.define_asset_job(
        RULES_JOB,
        selection=dg.AssetSelection.groups("rules"),
        description="One turn of the rule loop: propose, evaluate, promote.",
    )
    return [main, evaluate, rules]
