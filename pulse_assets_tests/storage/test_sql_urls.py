"""A SQL store URL's password never reaches an error message; SQLite files run in WAL mode."""

import sqlite3

import pytest
import sqlalchemy as sa

from pulse_assets.errors import StoreError
from pulse_assets.storage.sql import alias_events, connect, shown_url, write_ahead_log

SECRET = "s3cret-planted-9f2"


def test_a_refused_connection_names_the_store_without_its_password():
    url = f"postgresql+psycopg://pulse:{SECRET}@127.0.0.1:1/pulse"
    with pytest.raises(StoreError) as raised:
        connect(url)
    assert "pulse:***@127.0.0.1:1/pulse" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_urls_without_a_password_are_shown_as_they_are():
    assert shown_url("sqlite:////tmp/pulse.db") == "'sqlite:////tmp/pulse.db'"


def journal_mode(path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_sqlite_store_is_opened_in_write_ahead_log_mode_and_keeps_it(tmp_path):
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    assert journal_mode(plain) == "delete", "SQLite's default, so the test can fail"
    write_ahead_log(f"sqlite:///{plain}")
    assert journal_mode(plain) == "wal"

    engine = connect(f"sqlite:///{tmp_path / 'pulse.db'}")
    with engine.begin() as connection:
        connection.execute(sa.delete(alias_events))
    engine.dispose()
    assert journal_mode(tmp_path / "pulse.db") == "wal"


def test_in_memory_and_server_databases_are_left_as_they_are():
    write_ahead_log("sqlite://")
    write_ahead_log("sqlite:///:memory:")
    write_ahead_log("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")  # not opened
