"""Repository backends: SQLite in a temp folder and fresh PostgreSQL databases."""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from pulse_assets.storage.sql import connect

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """The URL of a database created for the caller and dropped after it."""
    name = f"pulse_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL on 127.0.0.1:5432 is required for these tests and is not reachable: {error}"
        )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """A database created for this test session and dropped after it."""
    with new_postgres_database() as url:
        yield url


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


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    """The URL of an empty store of each kind, for tests that build the schema themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        with new_postgres_database() as url:
            yield url
