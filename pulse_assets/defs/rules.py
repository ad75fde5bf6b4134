"""The rule loop as assets: candidates -> evaluations -> active rules.

Rule text and LLM prose come from outside: they reach the markdown metadata escaped."""

from collections.abc import Sequence

import dagster as dg
import polars as pl

from pulse_assets.config import Settings
from pulse_assets.defs.evaluation import RETRODICTION_KEY
from pulse_assets.defs.features import FEATURES_KEY
from pulse_assets.defs.metadata import escape_markdown, markdown_table
from pulse_assets.defs.resources import READ_EXISTING_ONLY, RegistryResource, SqlStoreResource
from pulse_assets.evaluation.retrodiction import window_metrics
from pulse_assets.rules.loop import RuleData, evaluate_drafts, promote, propose, rule_frame
from pulse_assets.rules.repository import RuleRecord
from pulse_assets.training.registry import ModelVersionInfo, VersionTags, require_champion

CANDIDATES_KEY = dg.AssetKey(["rules", "rule_candidates"])
EVALUATIONS_KEY = dg.AssetKey(["rules", "rule_evaluations"])
ACTIVE_KEY = dg.AssetKey(["rules", "active_rules"])
RECORD_COLUMNS = ("rule_id", "source", "status", "confidence", "definition")


def records_table(
    records: Sequence[RuleRecord], columns: Sequence[str] = RECORD_COLUMNS
) -> dg.MetadataValue:
    """Rule records as a markdown table (``markdown_table`` escapes every cell)."""
    rows = [{c: str(getattr(r, c)) for c in columns} for r in records]
    return markdown_table(
        pl.DataFrame(rows) if rows else pl.DataFrame({c: [] for c in columns}), max_rows=40
    )


def active_rules_markdown(records: Sequence[RuleRecord]) -> str:
    """One list item per active rule: id, definition, description and explanation, escaped."""
    return (
        "\n".join(
            f"- **{escape_markdown(r.rule_id)}** {escape_markdown(r.definition)}: "
            f"{escape_markdown(r.description)}; {escape_markdown(r.explanation)}"
            for r in records
        )
        or "No rule is active: none was accepted, or none lowered the RMSE on the evaluation windows."
    )


def _champion_windows(
    settings: Settings,
    registry: RegistryResource,
    retrodiction: pl.DataFrame,
    features: pl.DataFrame,
) -> tuple[ModelVersionInfo, RuleData]:
    """The champion and its retrodiction windows with features: what every rule asset reads."""
    champion = require_champion(registry.get())
    return champion, rule_frame(retrodiction, features, champion.version, settings.rules)


WINDOW_INPUTS = {
    "retrodiction": dg.AssetIn(RETRODICTION_KEY, metadata={READ_EXISTING_ONLY: True}),
    "features": dg.AssetIn(FEATURES_KEY, metadata={READ_EXISTING_ONLY: True}),
}


def build_rule_assets(settings: Settings) -> list[dg.AssetsDefinition]:
    config, labels = settings.rules, settings.training.labels

    @dg.asset(
        key=CANDIDATES_KEY,
        group_name="rules",
        description=(
            "Rule candidates from the champion's retrodiction errors on the earlier "
            f"{config.mining_share:.0%} of its out-of-sample windows: a symbolic miner (quantile bins and "
            "bin pairs, Welch t-test, Benjamini-Hochberg) and, when OPENAI_API_KEY is set, an LLM. Stored "
            "in the rule repository as draft (or rejected with the parser's reason)."
        ),
        ins=WINDOW_INPUTS,
        kinds={"sql"},
    )
    def rule_candidates(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        features: pl.DataFrame,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> dg.MaterializeResult:
        champion, data = _champion_windows(settings, registry, retrodiction, features)
        tags = VersionTags.of(champion)
        scores = window_metrics(data.frame, labels)
        model_info = {
            "model": {
                "name": registry.model_name,
                "version": champion.version,
                "type": settings.training.model.kind,
                "training_period": f"{tags.train_first}...{tags.train_last}",
            },
            "out_of_sample_metrics": {
                f"{label}.{metric}": {"model": value, "naive": figures["naive"][metric]}
                for label, figures in scores.items()
                for metric, value in figures["model"].items()
            },
        }
        report = propose(data, sql_store.rules(), config, labels, model_info, context.run.run_id)
        context.log.info(f"LLM step: {report.llm.status}")
        return dg.MaterializeResult(
            metadata={
                "champion_version": champion.version,
                "mining_windows": f"{report.mining_windows[0]}...{report.mining_windows[1]}",
                "patterns_found": report.patterns,
                "new_candidates": len(report.created),
                "duplicates_of_stored_rules": len(report.duplicates),
                "rejected_invalid": len(report.rejected),
                "llm": report.llm.status,
                "candidates": records_table(report.created + report.rejected),
            }
        )

    @dg.asset(
        key=EVALUATIONS_KEY,
        group_name="rules",
        description=(
            f"Every draft rule against the model on the later {1 - config.mining_share:.0%} of the windows "
            f"only: rmse, mae, r2 and a paired block-bootstrap {config.evaluation.confidence:.0%} interval "
            "of the RMSE improvement, vectorized over all rules. Accepted when the lower bound is above 0."
        ),
        ins=WINDOW_INPUTS,
        deps=[CANDIDATES_KEY],
        kinds={"sql"},
    )
    def rule_evaluations(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        features: pl.DataFrame,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> dg.MaterializeResult:
        _, data = _champion_windows(settings, registry, retrodiction, features)
        evaluated = evaluate_drafts(data, sql_store.rules(), config, labels, context.run.run_id)
        results, window = evaluated.results, evaluated.window
        table = (
            pl.DataFrame(
                [
                    {
                        "rule_id": r.record.rule_id,
                        "status": r.record.status,
                        "fired": r.fired_rows,
                        "improvement": round(r.metrics["improvement"], 6),
                        "ci_low": round(r.metrics["ci_low"], 6),
                        "ci_high": round(r.metrics["ci_high"], 6),
                        "definition": r.record.definition,
                    }
                    for r in results
                ]
            )
            if results
            else pl.DataFrame({"rule_id": []})
        )
        return dg.MaterializeResult(
            metadata={
                "evaluation_windows": f"{window[0]}...{window[1]}",
                "evaluated": len(results),
                "accepted": sum(r.accepted for r in results),
                "rejected_unreadable": records_table(evaluated.unusable),
                "evaluations": markdown_table(
                    table.sort("ci_low", descending=True) if results else table, max_rows=40
                ),
            }
        )

    @dg.asset(
        key=ACTIVE_KEY,
        group_name="rules",
        description=(
            f"The active rule set: greedy forward selection (at most {config.evaluation.max_active}) over "
            "accepted and active rules on the evaluation windows, skipping rules that conflict (same label, "
            "overlapping conditions, opposite effects); the others retire. Retrodiction applies these next."
        ),
        ins=WINDOW_INPUTS,
        deps=[EVALUATIONS_KEY],
        kinds={"sql"},
    )
    def active_rules(
        context: dg.AssetExecutionContext,
        retrodiction: pl.DataFrame,
        features: pl.DataFrame,
        registry: RegistryResource,
        sql_store: SqlStoreResource,
    ) -> dg.MaterializeResult:
        _, data = _champion_windows(settings, registry, retrodiction, features)
        result = promote(data, sql_store.rules(), config, labels, context.run.run_id)
        metadata: dict[str, dg.MetadataValue] = {
            "active": dg.MetadataValue.int(len(result.active)),
            "retired": dg.MetadataValue.int(len(result.retired)),
            "conflicts": dg.MetadataValue.json([list(c) for c in result.conflicts]),
            "active_rules": dg.MetadataValue.md(active_rules_markdown(result.active)),
        }
        if result.rmse_before is not None and result.rmse_after is not None:
            metadata |= {
                "evaluation_rmse_model": dg.MetadataValue.float(result.rmse_before),
                "evaluation_rmse_with_rules": dg.MetadataValue.float(result.rmse_after),
            }
        return dg.MaterializeResult(metadata=metadata)

    return [rule_candidates, rule_evaluations, active_rules]
