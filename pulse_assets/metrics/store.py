"""Metrics history per model version and window (the plan's MetricsStore)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa

from pulse_assets.storage.sql import model_metrics


@dataclass(frozen=True)
class MetricRecord:
    model_name: str
    model_version: str
    scope: str
    window_start: date
    window_end: date
    label: str
    metric: str
    value: float
    naive_value: float
    rows: int


class MetricsStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        *,
        model_name: str,
        model_version: str,
        scope: str,
        window: tuple[date, date],
        label: str,
        metrics: dict[str, dict[str, float]],
        rows: int,
        run_id: str | None = None,
    ) -> int:
        """Store one evaluation (model and naive figures per metric) in one transaction."""
        now = datetime.now(UTC)
        values = [
            {
                "model_name": model_name,
                "model_version": str(model_version),
                "scope": scope,
                "window_start": window[0],
                "window_end": window[1],
                "label": label,
                "metric": name,
                "value": _sql_float(value),
                "naive_value": _sql_float(metrics["naive"][name]),
                "rows": rows,
                "dagster_run_id": run_id,
                "recorded_at": now,
            }
            for name, value in metrics["model"].items()
        ]
        with self.engine.begin() as connection:
            connection.execute(model_metrics.insert(), values)
        return len(values)

    def history(
        self, model_name: str, model_version: str | None = None, scope: str | None = None
    ) -> list[MetricRecord]:
        query = sa.select(model_metrics).where(model_metrics.c.model_name == model_name)
        if model_version is not None:
            query = query.where(model_metrics.c.model_version == str(model_version))
        if scope is not None:
            query = query.where(model_metrics.c.scope == scope)
        query = query.order_by(model_metrics.c.window_start, model_metrics.c.id)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            MetricRecord(
                model_name=row["model_name"],
                model_version=row["model_version"],
                scope=row["scope"],
                window_start=row["window_start"],
                window_end=row["window_end"],
                label=row["label"],
                metric=row["metric"],
                value=_float(row["value"]),
                naive_value=_float(row["naive_value"]),
                rows=row["rows"],
            )
            for row in rows
        ]


def _sql_float(value: float) -> float | None:
    """NaN is stored as NULL (SQL has no NaN), and read back as NaN."""
    return None if value != value else float(value)


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)
