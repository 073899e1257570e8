"""The plans file's `wallet:` on a metered feature and `credits` on an AI model: read
exactly (never a float), stored and read back unchanged, and every mistake reported at
its path."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from billfold.catalog import plansfile
from billfold.catalog.ai import AiSettings
from billfold.catalog.plansfile import PlansFileError
from billfold.catalog.quotas import CREDIT_UNIT, QuotaPolicy, Rounding, WalletOverage
from billfold.ledger import checks as ledger_checks
from tests.conftest import Harness
from tests.metering.test_wallet_overage import wallet_plans

DOCUMENT = """
version: 1
meters:
  ai_tokens: {event: ai.tokens, aggregation: sum, property: tokens}
features:
  ai.tokens:
    type: metered
    meter: ai_tokens
    wallet: {unit: credits, rate: "0.25", rounding: half_even}
  ai.usd:
    type: metered
    meter: ai_tokens
    wallet: {unit: USD, rate: 3}
  ai.free:
    type: metered
    meter: ai_tokens
plans:
  free: {default: true, features: {ai.tokens: 100}}
ai:
  models:
    gpt-4o: {prompt: 250, completion: 1000, credits: "2"}
    o3: {prompt: 200, completion: 800}
"""


def errors_of(document: str) -> list[str]:
    with pytest.raises(PlansFileError) as caught:
        plansfile.parse(document)
    return caught.value.errors


def test_a_wallet_paid_quota_is_read_exactly_and_round_trips() -> None:
    spec = plansfile.parse(DOCUMENT)
    policy = QuotaPolicy.from_json(spec.features["ai.tokens"].config)
    assert policy.wallet == WalletOverage("credits", Decimal("0.25"), Rounding.HALF_EVEN)
    assert QuotaPolicy.from_json(policy.as_json()) == policy
    usd = QuotaPolicy.from_json(spec.features["ai.usd"].config)
    assert usd.wallet == WalletOverage("USD", Decimal(3), Rounding.UP)  # `up` by default
    # A quota without a wallet stores no `wallet` key: catalogs stored before it match.
    assert "wallet" not in spec.features["ai.free"].config
    assert QuotaPolicy.from_json(spec.features["ai.free"].config).wallet is None


def test_ai_models_carry_a_credit_rate_per_token() -> None:
    ai = plansfile.parse(DOCUMENT).ai
    assert ai.credit_unit == "credits"
    assert ai.credit_rate("gpt-4o") == Decimal(2)
    assert ai.credit_rate("o3") is None
    assert ai.credit_rate("unknown") is None
    assert ai.credit_rate(7) is None  # a property that is not a model name
    assert AiSettings.from_json(ai.as_json()) == ai
    # Without credits and with the default unit, the stored document is as before.
    assert ai.as_json()["models"]["o3"] == {"prompt": "200", "completion": "800"}
    assert "credit_unit" not in ai.as_json()


def test_wallet_and_credit_mistakes_are_reported_at_their_path() -> None:
    document = (
        DOCUMENT.replace(
            '{unit: credits, rate: "0.25", rounding: half_even}',
            "{unit: Credits, rate: 0.25, rounding: sideways, fee: 1}",
        )
        .replace("{unit: USD, rate: 3}", '{unit: XYZ, rate: "1.0000000000001"}')
        .replace('credits: "2"}', 'credits: "-1"}')
        .replace("ai:\n", "ai:\n  credit_unit: USD\n")
    )
    assert errors_of(document) == [
        "features.ai.tokens.wallet.unit: expected an ISO 4217 code (USD) or a credit unit "
        "(lowercase, e.g. credits)",
        'features.ai.tokens.wallet.rate: expected minor units per unit of usage, e.g. 2 or "0.015"',
        "features.ai.tokens.wallet.rounding: expected one of up, half_up, half_even",
        "features.ai.tokens.wallet.fee: unknown key (expected one of unit, rate, rounding)",
        "features.ai.usd.wallet.unit: expected an ISO 4217 code (USD) or a credit unit "
        "(lowercase, e.g. credits)",
        "features.ai.usd.wallet.rate: expected at most 12 decimal places and 24 digits",
        # ai.tokens is left out of the catalog for its problems, so the plan's value too
        "plans.free.features.ai.tokens: unknown feature (declare it under features)",
        "ai.credit_unit: expected a credit unit (lowercase, e.g. credits)",
        'ai.models.gpt-4o.credits: expected a non-negative rate, e.g. 2 or "0.015"',
    ]


def test_a_wallet_needs_its_unit_and_rate() -> None:
    document = DOCUMENT.replace("{unit: USD, rate: 3}", "{}")
    assert errors_of(document) == [
        "features.ai.usd.wallet.unit: expected an ISO 4217 code (USD) or a credit unit "
        "(lowercase, e.g. credits)",
        'features.ai.usd.wallet.rate: expected minor units per unit of usage, e.g. 2 or "0.015"',
    ]


def test_the_credit_unit_is_the_ledgers() -> None:
    """A wallet's unit is checked by the catalog when the file is read, and by the ledger
    when money moves: the two must agree on what a credit unit is."""
    assert CREDIT_UNIT.pattern == ledger_checks.CREDIT_UNIT.pattern
    assert re.fullmatch(CREDIT_UNIT, "credits")


@pytest.mark.anyio
async def test_the_catalog_shows_how_a_feature_is_paid_from_a_wallet(harness: Harness) -> None:
    await harness.apply_plans(wallet_plans())
    response = await harness.get("/v1/catalog")
    assert response.status_code == 200, response.text
    features = {feature["key"]: feature for feature in response.json()["features"]}
    assert features["ai.tokens"]["wallet"] == {"unit": "credits", "rate": "2", "rounding": "up"}
    assert features["spaces.max"]["wallet"] is None


def test_a_plan_may_not_price_a_meter_its_wallet_already_pays() -> None:
    priced = DOCUMENT.replace(
        "  free: {default: true, features: {ai.tokens: 100}}",
        "  free: {default: true, features: {ai.tokens: 100}}\n"
        "  pro:\n"
        "    features: {ai.tokens: 100}\n"
        "    prices:\n"
        "      - currency: USD\n"
        "        interval: month\n"
        "        recurring: {model: flat, amount: '29.00'}\n"
        "        usage: {ai_tokens: {model: per_unit, unit_amount: '0.01'}}\n",
    )
    assert errors_of(priced) == [
        "plans.pro.prices: meter ai_tokens is priced here and its overage is paid from the "
        "wallet by ai.tokens: that would charge it twice"
    ]
    # The same price on a plan whose features leave the wallet out is fine.
    plansfile.parse(
        priced.replace(
            "features: {ai.tokens: 100}\n    prices", "features: {ai.free: 100}\n    prices"
        )
    )
