"""The SQL stores' schema and engine (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import sqlalchemy as sa

from pulse_assets.errors import StoreError

metadata = sa.MetaData()

model_metrics = sa.Table(
    "model_metrics",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(50), nullable=False),
    sa.Column("scope", sa.String(50), nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("window_end", sa.Date, nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("metric", sa.String(50), nullable=False),
    sa.Column("value", sa.Float, nullable=True),
    sa.Column("naive_value", sa.Float, nullable=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_model_metrics_model", "model_name", "model_version", "scope"),
)

alias_events = sa.Table(
    "alias_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(50), nullable=False),
    sa.Column("from_version", sa.String(50), nullable=True),
    sa.Column("to_version", sa.String(50), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("figures", sa.JSON, nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)


def connect(url: str) -> sa.Engine:
    """An engine for ``url`` with the tables created; a bad URL is a StoreError naming it."""
    try:
        engine = sa.create_engine(url, future=True)
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as error:
        raise StoreError(f"cannot open the SQL store at {url!r}: {error}") from error
    return engine
