"""Repository backends: SQLite in a temp folder and fresh PostgreSQL databases."""

import pytest
import sqlalchemy as sa

from pulse_assets.storage.sql import connect
from pulse_assets_tests.postgres import fresh_database


@pytest.fixture(scope="session")
def postgres_url():
    """A database created for this test session and dropped after it."""
    with fresh_database() as url:
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
        with fresh_database() as url:
            yield url
