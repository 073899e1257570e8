"""Prices in the plans file: read and refused with their paths, stored on each plan version
(a price change is a new version), diffed, and answered by the catalog."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from billfold.catalog import plansfile
from billfold.catalog.plansfile import PlansFileError
from billfold.catalog.prices import PlanPrice
from billfold.pricing import rate
from tests.conftest import PLANS, Harness

YAML = {"Content-Type": "application/yaml"}


def with_prices(plan: str, prices: object) -> dict[str, object]:
    document = yaml.safe_load(PLANS.read_text())
    document["plans"][plan]["prices"] = prices
    return document


def problems(plan: str, prices: object) -> list[str]:
    with pytest.raises(PlansFileError) as caught:
        plansfile.validate(with_prices(plan, prices))
    return caught.value.errors


def test_the_example_prices_pro_and_studio() -> None:
    spec = plansfile.load(PLANS)
    pro = {price.key: price for price in spec.plans["pro"].prices}
    assert set(pro) == {("USD", "month", 1), ("EUR", "month", 1)}
    usd = pro["USD", "month", 1]
    assert usd.recurring is not None
    assert rate(usd.recurring, 1) == Decimal("29.00")  # the analysis document's price
    # AI-token overage: the 100,000 included tokens are free, then graduated.
    overage = usd.usage["ai_tokens"]
    assert rate(overage, 100_000) == 0
    assert rate(overage, 250_000) == Decimal("3.00000")
    assert rate(overage, 1_100_000) == Decimal("18.00000") + Decimal("1.500000")
    studio = {price.key for price in spec.plans["studio"].prices}
    assert studio == {
        ("USD", "month", 1),
        ("USD", "year", 1),
        ("EUR", "month", 1),
        ("EUR", "year", 1),
    }
    assert spec.plans["free"].prices == ()


def test_bad_prices_are_refused_with_their_paths() -> None:
    found = problems(
        "pro",
        [
            {
                "currency": "XXX",
                "interval": "fortnight",
                "interval_count": 0,
                "recurring": {"model": "percentage", "rate": "3"},
                "usage": {
                    "nope": {"model": "flat", "amount": "1"},
                    "ai_tokens": {
                        "model": "graduated",
                        "tiers": [
                            {"up_to": 5, "unit_amount": "1"},
                            {"up_to": 3, "unit_amount": "1"},
                        ],
                    },
                },
                "minimum": "-3",
                "trial_days": 1.5,
                "colour": "blue",
            },
            {"currency": "usd", "interval": "month", "recurring": {"model": "flat"}},
        ],
    )
    assert found == [
        "plans.pro.prices.0.colour: unknown key (expected one of currency, interval, "
        "interval_count, recurring, usage, minimum, trial_days)",
        "plans.pro.prices.0.currency: 'XXX' is not an ISO 4217 currency",
        "plans.pro.prices.0.interval: expected one of day, week, month, year",
        "plans.pro.prices.0.interval_count: expected a whole number from 1 to 36",
        "plans.pro.prices.0.trial_days: expected a whole number of days from 0 to 730",
        "plans.pro.prices.0.minimum: an amount is never negative (-3)",
        "plans.pro.prices.0.recurring.model: a recurring fee is one of flat, per_unit, "
        "graduated, volume, package",
        "plans.pro.prices.0.usage.nope: expected a meter declared under meters",
        "plans.pro.prices.0.usage.ai_tokens.tiers.1.up_to: tiers go up: 3 is not above 5",
        "plans.pro.prices.1.currency: 'usd' is not an ISO 4217 currency",
        "plans.pro.prices.1.recurring.amount: a flat price needs amount",
    ]


def test_one_price_per_currency_and_interval() -> None:
    monthly = {"currency": "USD", "interval": "month", "recurring": {"model": "flat", "amount": 5}}
    yearly = {**monthly, "interval": "year"}
    every_two = {**monthly, "interval_count": 2}
    assert problems("pro", [monthly, yearly, every_two, monthly]) == [
        "plans.pro.prices.3: a second price in USD every month (the first is item 0)"
    ]
    assert problems("pro", {"USD": "29"}) == [
        "plans.pro.prices: expected a list of prices, one per currency and interval"
    ]
    assert problems("pro", [{"currency": "USD", "interval": "month"}]) == [
        "plans.pro.prices.0: a price charges a recurring fee, usage, or both"
    ]


def test_a_percentage_price_reads_a_sum_meter() -> None:
    price = {"model": "percentage", "rate": "2.9", "fixed_amount": "0.30"}
    option = {"currency": "USD", "interval": "month", "usage": {"spaces": price}}
    assert problems("pro", [option]) == [
        "plans.pro.prices.0.usage.spaces.model: a percentage price takes each event's "
        "amount: a sum meter"
    ]


def test_numbers_are_stored_as_decimal_strings() -> None:
    option = {
        "currency": "JPY",
        "interval": "month",
        "recurring": {"model": "per_unit", "unit_amount": 0.1},
        "minimum": 500,
    }
    (price,) = plansfile.validate(with_prices("pro", [option])).plans["pro"].prices
    assert price.recurring == {"model": "per_unit", "unit_amount": "0.1"}
    assert price.minimum == Decimal(500)
    assert PlanPrice.from_json(price.as_json()) == price


@pytest.mark.anyio
async def test_a_price_change_is_a_new_version(harness: Harness) -> None:
    text = PLANS.read_text()
    edited = text.replace('amount: "29.00"', 'amount: "31.00"')
    preview = await harness.client.post(
        "/v1/catalog?dry_run=true", content=edited, headers={**harness.admin, **YAML}
    )
    assert preview.json()["changes"] == [
        "~ plan pro",
        "    v1 -> v2",
        '    price USD every month: recurring: {"model": "flat", "amount": "29.00"} -> '
        '{"model": "flat", "amount": "31.00"}',
    ]
    applied = await harness.client.post(
        "/v1/catalog", content=edited, headers={**harness.admin, **YAML}
    )
    assert applied.json()["applied"] is True
    catalog = (await harness.get("/v1/catalog")).json()
    pro = next(plan for plan in catalog["plans"] if plan["key"] == "pro")
    assert pro["version"] == 2
    assert pro["prices"][0]["recurring"] == {"model": "flat", "amount": "31.00"}
    assert pro["prices"][0]["usage"]["ai_tokens"]["model"] == "graduated"
    free = next(plan for plan in catalog["plans"] if plan["key"] == "free")
    assert (free["version"], free["prices"]) == (1, [])
    again = await harness.client.post(
        "/v1/catalog", content=edited, headers={**harness.admin, **YAML}
    )
    assert again.json()["applied"] is False


@pytest.mark.anyio
async def test_prices_added_to_a_stored_catalog_touch_only_the_priced_plans(
    harness: Harness,
) -> None:
    """Plans without prices hash as before prices existed: adding prices to two plans makes
    new versions of those two only."""
    document = yaml.safe_load(PLANS.read_text())
    for plan in document["plans"].values():
        plan.pop("prices", None)
    unpriced = yaml.safe_dump(document, sort_keys=False)
    removed = await harness.client.post(
        "/v1/catalog", content=unpriced, headers={**harness.admin, **YAML}
    )
    assert removed.json()["changes"][:3] == [
        "~ plan pro",
        "    v1 -> v2",
        "    price USD every month: removed",
    ]
    restored = await harness.client.post(
        "/v1/catalog", content=PLANS.read_text(), headers={**harness.admin, **YAML}
    )
    heads = [line for line in restored.json()["changes"] if not line.startswith(" ")]
    assert heads == ["~ plan pro", "~ plan studio"]


def test_coupons_are_read_and_refused_with_their_paths() -> None:
    document = yaml.safe_load(PLANS.read_text())
    assert set(plansfile.validate(document).coupons) == {"LAUNCH20", "WELCOME5", "FRIENDS10"}
    document["coupons"] = {
        "bad code": {"percent_off": "5", "duration": "once"},
        "BOTH": {"percent_off": "5", "amount_off": "1", "currency": "USD", "duration": "once"},
        "HUGE": {"percent_off": "150", "duration": "forever"},
        "NOCUR": {"amount_off": "5", "duration": "once"},
        "REP": {"percent_off": "5", "duration": "repeating"},
        "WHEN": {"percent_off": "5", "duration": "sometimes"},
    }
    with pytest.raises(PlansFileError) as caught:
        plansfile.validate(document)
    assert caught.value.errors == [
        "coupons.bad code: coupon codes are capitals, digits, - and _, e.g. LAUNCH20",
        "coupons.BOTH: a coupon takes either percent_off or amount_off",
        "coupons.HUGE.percent_off: a percentage above 0, at most 100",
        "coupons.NOCUR.currency: an amount off needs its ISO 4217 currency",
        "coupons.REP.periods: a repeating coupon runs a whole number of periods, 1 to 120",
        "coupons.WHEN.duration: expected one of once, repeating, forever",
    ]


@pytest.mark.anyio
async def test_a_coupon_must_exist_and_match_the_currency(harness: Harness) -> None:
    missing = await harness.post(
        "/v1/customers/co/subscriptions", {"plan": "pro", "coupon": "NOPE"}
    )
    assert (missing.status_code, missing.json()["code"]) == (404, "coupon_not_found")
    euros = await harness.post(
        "/v1/customers/co/subscriptions", {"plan": "pro", "currency": "EUR", "coupon": "WELCOME5"}
    )
    assert (euros.status_code, euros.json()["code"]) == (422, "coupon_currency_mismatch")
    assert euros.json()["errors"][0]["pointer"] == "#/coupon"
