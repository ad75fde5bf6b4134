"""SQL stores of both kinds for the error_log: SQLite in a temp folder, a fresh PostgreSQL
database for the test session (emptied before each test)."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pulse_assets.storage.sql import connect
from pulse_assets_tests.postgres import fresh_database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with fresh_database("pulse_errors") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pulse.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = connect(url)
    with engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE error_log RESTART IDENTITY"))
    engine.dispose()
    yield url


@pytest.fixture
def engine(sql_url: str) -> Iterator[sa.Engine]:
    engine = connect(sql_url)
    yield engine
    engine.dispose()
