"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

from pulse_assets.defs.evaluation import RETRODICTION_KEY, SCOREBOARD_KEY

MAIN_JOB = "pulse_main"
EVALUATE_JOB = "evaluate"
DRIFT_JOB = "drift"
SCOREBOARD_JOB = "scoreboard"
RULES_JOB = "rules"


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    main = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups("raw", "features"),
        description="Ingest every source and build features and labels over a partition range.",
    )
    evaluate = dg.define_asset_job(
        EVALUATE_JOB,
        selection=dg.AssetSelection.keys(RETRODICTION_KEY),
        description="Retrodiction over a range of rounds: the champion of each day, the "
        "challenger's shadow and the baselines (a backfill of rounds).",
    )
    scoreboard = dg.define_asset_job(
        SCOREBOARD_JOB,
        selection=dg.AssetSelection.keys(SCOREBOARD_KEY),
        description="Every forecaster's out-of-sample skill and the champion's significance.",
    )
    drift = dg.define_asset_job(
        DRIFT_JOB,
        selection=dg.AssetSelection.groups("drift"),
        description="Drift checks of the champion's features over a range of days.",
    )
    rules = dg.define_asset_job(
        RULES_JOB,
        selection=dg.AssetSelection.groups("rules"),
        description="One turn of the rule loop: propose, evaluate, promote.",
    )
    return [main, evaluate, scoreboard, drift, rules]
