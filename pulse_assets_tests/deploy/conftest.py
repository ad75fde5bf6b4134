"""The production profile against the real PostgreSQL on 127.0.0.1:5432 (trust auth, user
postgres): one fresh database per test session, dropped at its end, and an environment that
selects the profile and plants a password that must never show anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pulse_assets.config import CONFIG_ENV_VAR, PROFILE_ENV_VAR
from pulse_assets_tests.postgres import fresh_database

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
ADMIN_URL = f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"
# Trust auth accepts any password, so a planted one connects and can be searched for.
PLANTED_PASSWORD = f"pw-planted-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The name of a database created for this session and dropped (connections too) after."""
    with fresh_database("pulse_deploy") as url:
        yield url.rsplit("/", 1)[1]


@pytest.fixture
def pg_engine(pg_database: str) -> Iterator[sa.Engine]:
    """A direct connection to the session's database, to look at what Dagster wrote."""
    engine = sa.create_engine(f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{pg_database}")
    yield engine
    engine.dispose()


@pytest.fixture
def production_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PULSE_PROFILE=production with every variable it reads pointing under ``tmp_path``
    (PostgreSQL: the libpq variables, filled in by :func:`production_pg`); returns the
    PULSE_HOME. DAGSTER_HOME is set here so that prepare_dagster_home's change is undone."""
    home = tmp_path / "home"
    for name in (CONFIG_ENV_VAR, "PULSE_SQL_URL", "PGSERVICE", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    variables = {
        PROFILE_ENV_VAR: "production",
        "PULSE_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1",
        "PULSE_STORE_ROOT": str(tmp_path / "store"),
        "PULSE_CHECKPOINTS_ROOT": str(tmp_path / "checkpoints"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PULSE_MLFLOW_ARTIFACTS_URI": (tmp_path / "mlartifacts").as_uri(),
        "PGPASSWORD": PLANTED_PASSWORD,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return home


@pytest.fixture
def production_pg(production_env: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """:func:`production_env` connected to the session's database; returns the PULSE_HOME."""
    for name, value in {
        "PGHOST": PG_HOST,
        "PGPORT": str(PG_PORT),
        "PGUSER": PG_USER,
        "PGDATABASE": pg_database,
    }.items():
        monkeypatch.setenv(name, value)
    return production_env
