from pathlib import Path

import pytest
import yaml

from pulse_assets.config import load_settings, pulse_home
from pulse_assets.errors import ConfigError
from pulse_assets_tests.conftest import default_config


def write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "pulse.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_default_config_loads_with_the_three_embedded_sources():
    settings = load_settings()
    assert list(settings.sources) == ["market_prices", "political_polls", "social_activity"]
    assert settings.partitions.end.year - settings.partitions.start.year >= 5
    assert settings.features.lookback_days() > settings.features.lookback_rows()


def test_unknown_key_is_an_error_naming_key_and_file(tmp_path):
    raw = default_config()
    raw["partitions"]["strat"] = "2016-01-01"
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert "partitions.strat: unknown key" in str(error.value)
    assert str(path) in str(error.value)


def test_wrong_type_is_an_error_naming_the_key(tmp_path):
    raw = default_config()
    raw["quality"]["max_quarantine_share"] = "lots"
    with pytest.raises(ConfigError, match=r"quality\.max_quarantine_share"):
        load_settings(write_config(tmp_path, raw))


def test_feature_input_must_name_a_configured_source(tmp_path):
    raw = default_config()
    raw["features"]["inputs"]["weather"] = {"prefix": "wx", "columns": ["t"]}
    with pytest.raises(ConfigError, match="unknown source 'weather'"):
        load_settings(write_config(tmp_path, raw))


def test_fillna_must_come_first(tmp_path):
    raw = default_config()
    raw["features"]["steps"].append(raw["features"]["steps"].pop(0))
    with pytest.raises(ConfigError, match="fillna may appear once and must be the first step"):
        load_settings(write_config(tmp_path, raw))


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partitions: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)


def test_pulse_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "elsewhere"))
    assert pulse_home() == (tmp_path / "elsewhere").resolve()


def test_tracking_uri_defaults_to_sqlite_in_pulse_home_and_the_environment_overrides(
    monkeypatch, tmp_path
):
    from pulse_assets.config import tracking_uri

    monkeypatch.setenv("PULSE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = load_settings()
    assert tracking_uri(settings) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(settings) == "http://127.0.0.1:5000"


def test_training_labels_must_be_configured_labels(tmp_path):
    raw = default_config()
    raw["training"]["labels"] = ["tomorrow_weather"]
    with pytest.raises(
        ConfigError, match=r"training.labels names unknown label\(s\) \['tomorrow_weather'\]"
    ):
        load_settings(write_config(tmp_path, raw))
