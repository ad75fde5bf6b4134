"""A fresh PostgreSQL database on 127.0.0.1:5432 (trust auth, user postgres) for the tests
that need one, dropped after them with its connections."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

POSTGRES_SERVER = "postgres@127.0.0.1:5432"
POSTGRES_ADMIN = f"postgresql+psycopg://{POSTGRES_SERVER}/postgres"


@contextmanager
def fresh_database(prefix: str = "pulse_test") -> Iterator[str]:
    """The SQLAlchemy URL of a database created for the caller; dropped afterwards ``WITH
    (FORCE)``, so a connection a killed server left open does not keep it alive."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
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
        yield f"postgresql+psycopg://{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
