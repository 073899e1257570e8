"""Settings come from BILLFOLD_* once, in main(); what is wrong names its variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from billfold.catalog.quotas import Enforcement
from billfold.settings import Settings, SettingsError

KEY = "k" * 40


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean BILLFOLD_* environment whose secret file lives in a scratch folder."""
    for name in list(os.environ):
        if name.startswith("BILLFOLD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BILLFOLD_SECRET_FILE", str(tmp_path / "secret.key"))
    return monkeypatch


def test_the_defaults_make_a_self_hosted_deployment(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = Settings.from_env()
    assert (settings.mode, settings.enforcement) == ("self-hosted", Enforcement.ADVISORY)
    assert settings.database_url == "sqlite:///./var/billfold.db"
    secret = (tmp_path / "secret.key").read_text().strip()
    assert settings.secret_key == secret.encode()  # made on first use, kept
    assert Settings.from_env().secret_key == settings.secret_key
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600


def test_variables_are_read_and_an_empty_one_is_the_default(env: pytest.MonkeyPatch) -> None:
    env.setenv("BILLFOLD_MAX_BODY_BYTES", "2048")
    env.setenv("BILLFOLD_USAGE_CLOCK_SKEW_S", "")
    env.setenv("BILLFOLD_INGEST", "nats://127.0.0.1:4222")
    env.setenv("BILLFOLD_TRUST_FORWARDED_FOR", "1")
    env.setenv("BILLFOLD_SECRET_KEY", KEY)
    settings = Settings.from_env()
    assert settings.max_body_bytes == 2048
    assert settings.usage_clock_skew_s == 300
    assert settings.ingest == "nats://127.0.0.1:4222"
    assert settings.trust_forwarded_for is True
    assert settings.secret_key == KEY.encode()


def test_platform_mode_enforces_and_refuses_anything_else(env: pytest.MonkeyPatch) -> None:
    env.setenv("BILLFOLD_MODE", "platform")
    assert Settings.from_env().enforcement is Enforcement.ENFORCE
    env.setenv("BILLFOLD_ENFORCEMENT", "advisory")
    with pytest.raises(SettingsError, match="platform mode always enforces"):
        Settings.from_env()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BILLFOLD_MAX_BODY_BYTES", "lots", "BILLFOLD_MAX_BODY_BYTES: Input should be a valid"),
        ("BILLFOLD_CLAIM_ATTEMPT_WINDOW_S", "0", "BILLFOLD_CLAIM_ATTEMPT_WINDOW_S: Input should"),
        ("BILLFOLD_ENFORCEMENT", "strict", "BILLFOLD_ENFORCEMENT: Input should be 'off'"),
        ("BILLFOLD_MODE", "saas", "BILLFOLD_MODE: Input should be 'self-hosted'"),
        ("BILLFOLD_INGEST", "http://nats", "BILLFOLD_INGEST: must be a nats:// URL or empty"),
    ],
)
def test_a_bad_variable_is_named(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env()


def test_a_short_secret_key_is_refused_without_being_shown(env: pytest.MonkeyPatch) -> None:
    env.setenv("BILLFOLD_SECRET_KEY", "hunter2")
    with pytest.raises(SettingsError) as caught:
        Settings.from_env()
    assert "at least 32 characters" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_settings_built_in_code_never_read_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("BILLFOLD_MODE", "platform")
    env.setenv("BILLFOLD_MAX_BODY_BYTES", "7")
    settings = Settings(database_url="sqlite:///x.db", secret_key=KEY.encode())
    assert (settings.mode, settings.max_body_bytes) == ("self-hosted", 1_048_576)
