"""The SQL stores' schema and engine (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

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
    # the simulated day the move takes effect on (a round's start when history is replayed)
    sa.Column("as_of", sa.Date, nullable=True),
)


rules = sa.Table(
    "rules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(40), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(32), nullable=False),
    sa.Column("label", sa.String(200), nullable=False),
    sa.Column("source", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("confidence", sa.String(10), nullable=False),
    sa.Column("impact", sa.Float, nullable=True),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("changes", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    # the fingerprint on the latest version of a rule that is not deleted, NULL on every other
    # row: unique, so two live rules can never share a fingerprint, whoever writes them
    sa.Column("live_fingerprint", sa.String(32), nullable=True),
    sa.UniqueConstraint("rule_id", "version", name="uq_rules_rule_version"),
    sa.Index("ix_rules_fingerprint", "fingerprint"),
    sa.Index("ix_rules_status", "status"),
)
# A plain unique index over a nullable column (NULLs never collide) rather than a partial
# index: it means the same on every SQLAlchemy backend, not only SQLite and PostgreSQL.
LIVE_FINGERPRINT_INDEX = sa.Index(
    "uq_rules_live_fingerprint", rules.c.live_fingerprint, unique=True
)

rule_events = sa.Table(
    "rule_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(40), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("from_status", sa.String(20), nullable=True),
    sa.Column("to_status", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_rule_events_rule", "rule_id"),
)

rule_evaluations = sa.Table(
    "rule_evaluations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(40), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("window_end", sa.Date, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("fired_rows", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("ci_low", sa.Float, nullable=False),
    sa.Column("ci_high", sa.Float, nullable=False),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

# The failure handler's decisions (pulse_assets/reliability/error_log.py), append only.
error_log = sa.Table(
    "error_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("root_run_id", sa.String(64), nullable=False),
    sa.Column("job_name", sa.String(200), nullable=True),
    sa.Column("step_key", sa.String(300), nullable=True),
    sa.Column("partition", sa.String(100), nullable=True),
    sa.Column("failure_class", sa.String(50), nullable=False),
    sa.Column("severity", sa.Integer, nullable=False),
    sa.Column("strategy", sa.String(30), nullable=False),
    sa.Column("action", sa.String(30), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("exception_type", sa.String(300), nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("source", sa.String(100), nullable=True),
    sa.Column("batch_size", sa.Integer, nullable=True),
    sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # one decision per failed step, one launch per retry, one alert per run: a second
    # handler of the same failure fails on it instead of acting twice
    sa.Column("dedupe_key", sa.String(420), nullable=False, unique=True),
    sa.Index("ix_error_log_run", "run_id"),
    sa.Index("ix_error_log_root", "root_run_id", "attempt"),
)


def shown_url(url: str) -> str:
    """``url`` as error messages may show it: any password replaced by ***."""
    try:
        return repr(sa.engine.make_url(url).render_as_string(hide_password=True))
    except sa.exc.ArgumentError:
        return "(a URL SQLAlchemy cannot parse)"


def write_ahead_log(url: str) -> None:
    """Put the SQLite database file at ``url`` in write-ahead-log mode, which the file keeps:
    a commit appends to the log instead of writing and removing a rollback journal (0.26 ms
    against 1.06 ms a commit on this machine's disk), and readers no longer block the writer.
    Dagster's own SQLite storages do the same. Other databases and in-memory ones are left
    as they are; WAL needs a local disk, as SQLite always should have."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sa.exc.SQLAlchemyError as error:
        raise StoreError(f"cannot open the SQLite database at {shown_url(url)}: {error}") from error
    finally:
        engine.dispose()


def connect(url: str) -> sa.Engine:
    """An engine for ``url`` with the tables created (and an older rules table upgraded); a
    bad URL is a StoreError naming it."""
    try:
        write_ahead_log(url)
        engine = sa.create_engine(url, future=True)
        metadata.create_all(engine)
    except sa.exc.SQLAlchemyError as error:
        raise StoreError(f"cannot open the SQL store at {shown_url(url)}: {error}") from error
    _upgrade_rules(engine, url)
    _upgrade_alias_events(engine, url)
    return engine


def _upgrade_alias_events(engine: sa.Engine, url: str) -> None:
    """An alias audit made before ``as_of`` existed gets the column (empty for old moves)."""
    if "as_of" in {c["name"] for c in sa.inspect(engine).get_columns("alias_events")}:
        return
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE alias_events ADD COLUMN as_of DATE"))
    except sa.exc.SQLAlchemyError as error:
        if "as_of" in {c["name"] for c in sa.inspect(engine).get_columns("alias_events")}:
            return
        raise StoreError(
            f"cannot add the as_of column to alias_events in the SQL store at {shown_url(url)}: {error}. "
            "Check that the database user may ALTER the table"
        ) from error


# Which of several live rules with one fingerprint an upgrade keeps: the one furthest along
# (an active rule stays active), then the oldest, then the smallest id. Deterministic.
KEEP_FIRST = ("active", "accepted", "evaluated", "draft", "retired", "rejected")


def _has_live_fingerprint(engine: sa.Engine) -> bool:
    return "live_fingerprint" in {c["name"] for c in sa.inspect(engine).get_columns("rules")}


def _upgrade_rules(engine: sa.Engine, url: str) -> None:
    """A rules table made before ``live_fingerprint`` existed gets the column, filled for the
    latest version of every live rule, and its unique index, in one transaction.

    Concurrent adds could leave several live rules with one fingerprint then; the upgrade
    keeps one (KEEP_FIRST) and soft-deletes the others, each with a ``deleted`` event naming
    the rule it duplicated, so every version stays readable and nothing is lost. Two
    processes upgrading at once: one wins, the other finds the column and stops."""
    if _has_live_fingerprint(engine):
        return
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE rules ADD COLUMN live_fingerprint VARCHAR(32)"))
            _delete_duplicates(connection)
            connection.execute(
                sa.update(rules)
                .where(rules.c.deleted_at.is_(None), rules.c.version == _latest_version())
                .values(live_fingerprint=rules.c.fingerprint)
            )
            LIVE_FINGERPRINT_INDEX.create(connection)
    except sa.exc.SQLAlchemyError as error:
        if _has_live_fingerprint(engine):
            return
        raise StoreError(
            f"cannot upgrade the rules table of the SQL store at {shown_url(url)} (adding the unique "
            f"live_fingerprint column): {error}. Check that the database user may ALTER the "
            "table, then open the store again"
        ) from error


def _latest_version() -> sa.ScalarSelect[int]:
    newer = rules.alias("newer")
    return (
        sa.select(sa.func.max(newer.c.version))
        .where(newer.c.rule_id == rules.c.rule_id)
        .scalar_subquery()
    )


def _delete_duplicates(connection: sa.Connection) -> None:
    live = connection.execute(
        sa.select(
            rules.c.rule_id,
            rules.c.version,
            rules.c.fingerprint,
            rules.c.status,
            rules.c.created_at,
        ).where(rules.c.deleted_at.is_(None), rules.c.version == _latest_version())
    ).all()
    now = datetime.now(UTC)
    by_fingerprint = sorted(live, key=lambda r: r.fingerprint)
    for fingerprint, group in itertools.groupby(by_fingerprint, key=lambda r: r.fingerprint):
        keep, *others = sorted(
            group,
            key=lambda r: (
                KEEP_FIRST.index(r.status) if r.status in KEEP_FIRST else len(KEEP_FIRST),
                _utc(r.created_at),
                r.rule_id,
            ),
        )
        for other in others:
            connection.execute(
                sa.update(rules).where(rules.c.rule_id == other.rule_id).values(deleted_at=now)
            )
            connection.execute(
                rule_events.insert().values(
                    rule_id=other.rule_id,
                    version=other.version,
                    from_status=other.status,
                    to_status="deleted",
                    reason=(
                        f"duplicate of rule {keep.rule_id} (same fingerprint {fingerprint}, "
                        "left by concurrent adds before live fingerprints were unique); "
                        "deleted by the schema upgrade"
                    ),
                    dagster_run_id=None,
                    at=now,
                )
            )


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes for timezone-aware columns: they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
