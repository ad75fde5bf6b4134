"""A fresh PostgreSQL database on 127.0.0.1:5432 for a test run, dropped after it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def new_postgres_database() -> Iterator[str]:
    """The URL of a database created for the caller and dropped (with its connections) after."""
    name = f"pulse_errors_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as error:
        admin.dispose()
        pytest.fail(
            f"PostgreSQL on 127.0.0.1:5432 is required for these tests and is not reachable: "
            f"{error}. Start it (trust auth for user postgres) and run the tests again"
        )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
