"""The typed ``entities`` settings: on by default with the 51 state codes, checked at load."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from pulse_assets.config import US_STATES, load_settings
from pulse_assets.errors import ConfigError
from pulse_assets_tests.conftest import default_config


def written(tmp_path: Path, **entities: Any) -> Path:
    raw = default_config()
    raw["entities"] = raw["entities"] | entities
    path = tmp_path / "pulse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_is_on_with_the_births_of_every_state_in_1988(tmp_path):
    settings = load_settings(written(tmp_path)).entities
    assert settings.enabled and settings.entities == list(US_STATES) and len(US_STATES) == 51
    assert settings.source.plugin == "pulse_assets.entities.source:BirthsByStateDaily"
    assert (settings.partitions.start.isoformat(), str(settings.partitions.end)) == (
        "1988-01-01",
        "1989-01-01",
    )


@pytest.mark.parametrize(
    ("entities", "problem"),
    [
        ({"entities": ["CA", "NY", "CA"]}, "entities ['CA'] are listed more than once"),
        ({"entities": ["CA|NY"]}, "must be non-empty, untrimmed text without | , [ ]"),
        ({"entities": []}, "entities: List should have at least 1 item"),
        ({"value_column": "state"}, "value_column 'state' must be an int or float column"),
        ({"trailing_days": 1}, "trailing_days: Input should be greater than or equal to 2"),
    ],
)
def test_a_bad_entities_block_names_its_key(tmp_path, entities, problem):
    with pytest.raises(ConfigError, match="invalid configuration in") as error:
        load_settings(written(tmp_path, **entities))
    assert problem in str(error.value)


def test_an_unknown_source_plugin_fails_the_load(tmp_path):
    source = default_config()["entities"]["source"] | {"plugin": "pulse_assets.entities:Nope"}
    with pytest.raises(ConfigError, match=r"entities.source: .*has no class 'Nope'"):
        load_settings(written(tmp_path, source=source))
