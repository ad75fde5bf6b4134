"""A SQL store URL's password never reaches an error message."""

import pytest

from pulse_assets.errors import StoreError
from pulse_assets.storage.sql import connect, shown_url

SECRET = "s3cret-planted-9f2"


def test_a_refused_connection_names_the_store_without_its_password():
    url = f"postgresql+psycopg://pulse:{SECRET}@127.0.0.1:1/pulse"
    with pytest.raises(StoreError) as raised:
        connect(url)
    assert "pulse:***@127.0.0.1:1/pulse" in str(raised.value)
    assert SECRET not in str(raised.value)


def test_urls_without_a_password_are_shown_as_they_are():
    assert shown_url("sqlite:////tmp/pulse.db") == "'sqlite:////tmp/pulse.db'"
