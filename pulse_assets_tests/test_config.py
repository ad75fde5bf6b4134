import os
import subprocess
import sys
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


def bad_source_config(tmp_path: Path, change) -> Path:
    raw = default_config()
    change(raw["sources"]["political_polls"])
    return write_config(tmp_path, raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda source: source.update(plugin="pulse_assets.ingest.nowhere:Polls"),
            r"sources\.political_polls: source 'political_polls': cannot import plugin module "
            r"'pulse_assets\.ingest\.nowhere'",
        ),
        (
            lambda source: source.update(plugin="pulse_assets.ingest.file_source:FileSorce"),
            r"sources\.political_polls: .*module 'pulse_assets\.ingest\.file_source' has no class "
            r"'FileSorce'",
        ),
        (
            lambda source: source["params"].update(windw=3),
            r"sources\.political_polls: .*invalid params .*params\.windw: Extra inputs",
        ),
        (
            lambda source: source.update(
                plugin="pulse_assets.ingest.http_source:HttpJsonSource",
                params={
                    "base_url": "http://127.0.0.1:1",
                    "variables": ["m"],
                    "time_zone": "Mars/Olympus",
                },
            ),
            r"sources\.political_polls: .*params\.time_zone: .*unknown time zone 'Mars/Olympus'",
        ),
    ],
    ids=["module", "class", "param", "time_zone"],
)
def test_a_bad_plugin_is_an_error_at_load_naming_key_and_file(tmp_path, change, message):
    path = bad_source_config(tmp_path, change)
    with pytest.raises(ConfigError, match=message) as error:
        load_settings(path)
    assert f"invalid configuration in {path}" in str(error.value)


def test_a_bad_partitions_time_zone_is_an_error_at_load(tmp_path):
    raw = default_config()
    raw["partitions"]["timezone"] = "Europe/Atlantis"
    path = write_config(tmp_path, raw)
    with pytest.raises(ConfigError, match=r"partitions\.timezone: .*unknown time zone") as error:
        load_settings(path)
    assert str(path) in str(error.value)


def test_dagster_definitions_validate_catches_a_bad_plugin(tmp_path):
    path = bad_source_config(tmp_path, lambda source: source["params"].update(windw=3))
    repo = Path(__file__).resolve().parent.parent
    env = os.environ | {"PULSE_CONFIG": str(path), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            "workspace.yaml",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "sources.political_polls" in output and "params.windw" in output, output
