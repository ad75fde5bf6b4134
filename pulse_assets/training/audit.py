"""Every alias move (who, when, why, the figures) in an audit table, beside the version tags."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from pulse_assets.storage.sql import alias_events


@dataclass(frozen=True)
class AliasEvent:
    model_name: str
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str
    figures: dict[str, Any]
    dagster_run_id: str | None
    at: datetime
    as_of: date | None = None


class AliasAudit:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(self, event: AliasEvent) -> None:
        with self.engine.begin() as connection:
            connection.execute(alias_events.insert().values(**event.__dict__))

    def history(self, model_name: str, alias: str | None = None) -> list[AliasEvent]:
        query = sa.select(alias_events).where(alias_events.c.model_name == model_name)
        if alias is not None:
            query = query.where(alias_events.c.alias == alias)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(alias_events.c.id)).mappings().all()
        return [AliasEvent(**{k: v for k, v in row.items() if k != "id"}) for row in rows]


def holder_at(events: list[AliasEvent], alias: str, day: date) -> str | None:
    """The version ``alias`` pointed at on simulated day ``day``: the latest move (by ``as_of``,
    then by order of recording) that took effect on or before it. The one answer to "which
    version was champion on day t"."""
    moves = [
        (event.as_of, order, event.to_version)
        for order, event in enumerate(events)
        if event.alias == alias and event.as_of is not None and event.as_of <= day
    ]
    return max(moves)[2] if moves else None


def now() -> datetime:
    return datetime.now(UTC)
