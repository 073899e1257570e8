"""The platform fee is configuration: BILLFOLD_PLATFORM_FEE_PERCENT, 0 up to 100, wired
into settlement at the edge with the mode."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from billfold.settings import Settings, SettingsError
from billfold.settlement import deps
from billfold.settlement.records import Policy


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("BILLFOLD_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BILLFOLD_SECRET_KEY", "k" * 40)
    return monkeypatch


def test_the_fee_defaults_to_3_5_percent_in_self_hosted_mode(env: pytest.MonkeyPatch) -> None:
    assert deps.wire(Settings.from_env()) == Policy("self-hosted", Decimal("3.5"))
    assert Settings.from_env().payout_interval_s == 86_400


def test_the_fee_and_mode_are_read_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("BILLFOLD_MODE", "platform")
    env.setenv("BILLFOLD_PLATFORM_FEE_PERCENT", "2.25")
    env.setenv("BILLFOLD_PAYOUT_INTERVAL_S", "3600")
    settings = Settings.from_env()
    assert deps.wire(settings) == Policy("platform", Decimal("2.25"))
    assert settings.payout_interval_s == 3600


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("100", "from 0 up to (not including) 100"),
        ("-0.5", "from 0 up to (not including) 100"),
        ("1.23456", "at most 4 decimal places"),
        ("lots", "Input should be a valid decimal"),
        ("NaN", "finite"),
    ],
)
def test_a_bad_fee_is_refused_by_name(env: pytest.MonkeyPatch, value: str, message: str) -> None:
    env.setenv("BILLFOLD_PLATFORM_FEE_PERCENT", value)
    with pytest.raises(
        SettingsError,
        match=r"BILLFOLD_PLATFORM_FEE_PERCENT: .*"
        + message.replace("(", r"\(").replace(")", r"\)"),
    ):
        Settings.from_env()
