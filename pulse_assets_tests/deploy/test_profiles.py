"""Profile selection with PULSE_PROFILE, `extends` overlays, `{env: NAME}` values, and no
secret in the settings: no PostgreSQL needed here."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pulse_assets.cli import prepare_dagster_home
from pulse_assets.config import (
    CONFIG_ENV_VAR,
    DEFAULT_CONFIG_PATH,
    DEPLOY_ROOT,
    PROFILE_ENV_VAR,
    REPO_ROOT,
    instance_yaml_path,
    load_settings,
    settings_path,
    sql_url,
    store_root,
    tracking_uri,
)
from pulse_assets.errors import ConfigError
from pulse_assets_tests.deploy.conftest import PLANTED_PASSWORD


@pytest.fixture
def no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROFILE_ENV_VAR, raising=False)
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)


def test_without_a_profile_the_defaults_of_today_apply(no_profile: None) -> None:
    assert settings_path() == DEFAULT_CONFIG_PATH
    assert instance_yaml_path() == REPO_ROOT / "dagster.yaml"


def test_the_local_profile_is_the_embedded_default(
    no_profile: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = load_settings()
    monkeypatch.setenv(PROFILE_ENV_VAR, "local")
    assert settings_path() == DEPLOY_ROOT / "local" / "pulse.yaml"
    assert load_settings() == default, "configs/deploy/local/pulse.yaml drifted from the default"
    local = yaml.safe_load(instance_yaml_path().read_text())
    assert local == yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text()), (
        "configs/deploy/local/dagster.yaml and ./dagster.yaml differ: keep them equal (the "
        "repository's is what runs without a profile)"
    )


def test_production_reads_every_location_from_the_environment(production_env: Path) -> None:
    settings = load_settings()
    assert store_root(settings).endswith("/store")
    assert sql_url(settings) == "postgresql+psycopg://"  # libpq's PG* variables
    assert tracking_uri(settings).startswith("sqlite:///") and "mlflow.db" in tracking_uri(settings)
    assert settings.training.checkpoints_root and settings.training.checkpoints_root.endswith(
        "/checkpoints"
    )
    assert (settings.training.tracking.artifacts_uri or "").startswith("file://")
    default = load_settings(DEFAULT_CONFIG_PATH)
    # everything else is the default's: the overlay merges, it does not replace sections
    assert settings.features == default.features and settings.rounds == default.rounds
    assert settings.training.model == default.training.model
    assert settings.training.tracking.model_name == default.training.tracking.model_name


def test_production_names_the_key_and_the_missing_variable(
    production_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(ConfigError, match=r"training\.tracking\.uri: .*MLFLOW_TRACKING_URI"):
        load_settings()
    monkeypatch.setenv("PULSE_SQL_URL", "postgresql+psycopg://pulse@db.internal:5432/pulse")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_settings().sql.url == "postgresql+psycopg://pulse@db.internal:5432/pulse"


def test_an_unknown_profile_lists_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    monkeypatch.setenv(PROFILE_ENV_VAR, "../../etc")
    with pytest.raises(ConfigError, match=r"known: \['kubernetes', 'local', 'production'\]"):
        load_settings()
    with pytest.raises(ConfigError, match="names no deployment profile"):
        instance_yaml_path()


def test_pulse_config_wins_over_the_profile(
    production_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(DEFAULT_CONFIG_PATH))
    assert settings_path() == DEFAULT_CONFIG_PATH
    assert load_settings().store.root is None
    # the instance still follows the profile: PULSE_CONFIG names a settings file only
    assert instance_yaml_path() == DEPLOY_ROOT / "production" / "dagster.yaml"


def test_extends_merges_mappings_and_refuses_cycles(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(
        f"extends: {DEFAULT_CONFIG_PATH}\n"
        "training: {optimizer: {epochs: 5}}\n"
        "drift: {persistence: {env: PULSE_TEST_UNSET_VARIABLE, default: 7}}\n"
    )
    settings, default = load_settings(overlay), load_settings(DEFAULT_CONFIG_PATH)
    assert settings.training.optimizer.epochs == 5
    assert settings.training.optimizer.batch_size == default.training.optimizer.batch_size
    assert settings.drift.persistence == 7
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("extends: b.yaml\n")
    second.write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="which extends it"):
        load_settings(first)
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist \(extended by"):
        load_settings(tmp_path / "c.yaml")


def test_no_secret_reaches_the_settings(
    production_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PGPASSWORD is planted; the settings never hold it. A URL carrying a password is
    refused, and the refusal does not repeat it."""
    settings = load_settings()
    for rendered in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert PLANTED_PASSWORD not in rendered
    for variable in ("PULSE_SQL_URL", "MLFLOW_TRACKING_URI", "PULSE_STORE_ROOT"):
        with monkeypatch.context() as patch:
            patch.setenv(variable, f"https://pulse:{PLANTED_PASSWORD}@db.internal:5432/pulse")
            with pytest.raises(ConfigError, match="the URL holds a password") as caught:
                load_settings()
        assert PLANTED_PASSWORD not in str(caught.value), f"{variable}'s refusal repeats it"
        assert PLANTED_PASSWORD not in repr(caught.value)


def test_prepare_dagster_home_copies_the_profile_instance(production_env: Path) -> None:
    dagster_home = prepare_dagster_home(production_env)
    copied = yaml.safe_load((dagster_home / "dagster.yaml").read_text())
    assert "postgres" in copied["storage"], "the production instance must store in PostgreSQL"
    assert "password" not in copied["storage"]["postgres"]["postgres_db"], (
        "the password must come from PGPASSWORD through libpq, not from Dagster's config"
    )
