"""Repository backends: SQLite in a temp folder and a fresh PostgreSQL database per test run."""

import uuid

import pytest
import sqlalchemy as sa

from pulse_assets.storage.sql import connect

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session")
def postgres_url():
    """A database created for this test session and dropped after it."""
    name = f"pulse_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        pytest.fail(
            f"PostgreSQL on 127.0.0.1:5432 is required for these tests and is not reachable: {error}"
        )
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path, postgres_url):
    if request.param == "sqlite":
        engine = connect(f"sqlite:///{tmp_path / 'rules.db'}")
    else:
        engine = connect(postgres_url)
        with engine.begin() as connection:
            connection.execute(
                sa.text("TRUNCATE rules, rule_events, rule_evaluations RESTART IDENTITY")
            )
    yield engine
    engine.dispose()
