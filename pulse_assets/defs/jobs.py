"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

from pulse_assets.defs.evaluation import RETRODICTION_KEY, SCOREBOARD_KEY
from pulse_assets.defs.metrics import METRICS_KEY
from pulse_assets.defs.rules import GAINS_KEY, IMPACT_KEY, STATE_KEY
from pulse_assets.defs.training import MODEL_KEY

MAIN_JOB = "pulse_main"
EVALUATE_JOB = "evaluate"
DRIFT_JOB = "drift"
SCOREBOARD_JOB = "scoreboard"
RULES_JOB = "rules"
RULE_GAINS_JOB = "rule_gains"
METRICS_JOB = "metrics"


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition]:
    main = dg.define_asset_job(
        MAIN_JOB,
        selection=dg.AssetSelection.groups("raw", "features"),
        description="Ingest every source and build features and labels over a partition range.",
    )
    evaluate = dg.define_asset_job(
        EVALUATE_JOB,
        selection=dg.AssetSelection.keys(RETRODICTION_KEY)
        | dg.AssetSelection.checks_for_assets(MODEL_KEY),
        description="Retrodiction over a range of rounds: the champion of each day, the "
        "challenger's shadow and the baselines (a backfill of rounds); then the model's check "
        "that the champion beats the best baseline over the latest rounds.",
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
        selection=dg.AssetSelection.keys(STATE_KEY, IMPACT_KEY),
        description="The rule loop over a range of rounds, in order: each round's rules decided "
        "from the days before it (mined, accepted, retired, selected) and applied to its days.",
    )
    gains = dg.define_asset_job(
        RULE_GAINS_JOB,
        selection=dg.AssetSelection.keys(GAINS_KEY),
        description="The gain of every rule and of the rules in force, after activation only.",
    )
    metrics = dg.define_asset_job(
        METRICS_JOB,
        selection=dg.AssetSelection.keys(METRICS_KEY),
        description="Per-round and cumulative skill, DM tests, trust delta and symbolic "
        "alignment over a range of rounds.",
    )
    return [main, evaluate, scoreboard, drift, rules, gains, metrics]
