"""billfold.pricing: each model on worked examples, the properties the issue names, billing
dates across short months and leap years, and prorations that add up."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit.errors import InvalidInput
from billfold.pricing import PriceError, billing_dates, parse_price, prorate, rate

D = Decimal

GRADUATED = {
    "model": "graduated",
    "tiers": [
        {"up_to": 1000, "unit_amount": "0", "flat_amount": "0"},
        {"up_to": 10000, "unit_amount": "0.002", "flat_amount": "1.00"},
        {"up_to": None, "unit_amount": "0.001"},
    ],
}
VOLUME = {
    "model": "volume",
    "tiers": [
        {"up_to": 10, "unit_amount": "5"},
        {"up_to": 100, "unit_amount": "4.5", "flat_amount": "5"},
        {"up_to": None, "unit_amount": "4", "flat_amount": "55"},
    ],
}


@pytest.mark.parametrize(
    ("price", "usage", "charged"),
    [
        ({"model": "flat", "amount": "29.00"}, 0, "29.00"),
        ({"model": "per_unit", "unit_amount": "0.0004"}, 12345, "4.9380"),
        (GRADUATED, 0, "0"),
        (GRADUATED, 1000, "0"),
        (GRADUATED, 1001, "1.002"),  # one unit in tier 2: its unit amount and its flat amount
        (GRADUATED, 12000, "21.000"),  # 0 + (9000 * 0.002 + 1) + 2000 * 0.001
        (VOLUME, 10, "50"),
        (VOLUME, 11, "54.5"),  # every unit at the second tier's rate, and its flat amount
        (VOLUME, 0, "0"),
        (
            {"model": "package", "package_size": 100, "package_amount": "5", "free_units": 50},
            151,
            "10",  # 101 billable units: 2 packages, rounded up
        ),
        (
            {
                "model": "package",
                "package_size": 100,
                "package_amount": "5",
                "rounding": "down",
            },
            199,
            "5",
        ),
    ],
)
def test_each_model_charges_as_written(price: dict[str, Any], usage: int, charged: str) -> None:
    assert rate(price, usage) == D(charged)


def test_volume_tiers_that_would_charge_less_for_more_are_refused() -> None:
    cheaper = {
        "model": "volume",
        "tiers": [{"up_to": 10, "unit_amount": "5"}, {"up_to": None, "unit_amount": "4"}],
    }
    with pytest.raises(PriceError) as refused:
        parse_price(cheaper, path="#/plans/pro/prices/0")
    assert refused.value.errors[0].pointer == "#/plans/pro/prices/0/tiers/1"


PERCENTAGE = {
    "model": "percentage",
    "rate": "2.5",
    "fixed_amount": "0.10",
    "free_events": 2,
    "min_per_event": "0.20",
    "max_per_event": "5",
}


def test_percentage_charges_each_event_after_the_free_ones_within_its_bounds() -> None:
    events = [D(100), D(100), D(1), D(100), D(1000)]
    # free, free, max(0.025 + 0.10, 0.20), 2.5 + 0.10, min(25 + 0.10, 5)
    assert rate(PERCENTAGE, events) == D("0.20") + D("2.60") + D("5")


def test_a_free_amount_covers_the_first_amounts_and_charges_the_rest_of_an_event() -> None:
    price = {"model": "percentage", "rate": "10", "free_amount": "150"}
    assert rate(price, [D(100), D(100), D(100)]) == D("5") + D("10")


def test_with_both_allowances_the_first_to_run_out_ends_them() -> None:
    price = {"model": "percentage", "rate": "10", "free_events": 1, "free_amount": "50"}
    # the first event is free (30 of the 50); the second is past free_events
    assert rate(price, [D(30), D(40), D(100)]) == D(4) + D(10)


def test_graduated_percentage_charges_each_tier_its_rate() -> None:
    price = {
        "model": "graduated_percentage",
        "tiers": [
            {"up_to": 1000, "rate": "3", "flat_amount": "0"},
            {"up_to": None, "rate": "2", "flat_amount": "1"},
        ],
    }
    assert rate(price, [D(600), D(900)]) == D(30) + D(10) + D(1)


@pytest.mark.parametrize(
    ("price", "pointer"),
    [
        ({"model": "flat", "amount": "-1"}, "#/amount"),
        ({"model": "flat", "amount": "abc"}, "#/amount"),
        ({"model": "flat"}, "#/amount"),
        ({"model": "tiered"}, "#/model"),
        ({"model": "per_unit", "unit_amount": "1", "colour": "red"}, "#/colour"),
        (
            {"model": "graduated", "tiers": [{"up_to": 10}, {"up_to": 5}, {"up_to": None}]},
            "#/tiers/1/up_to",
        ),
        ({"model": "graduated", "tiers": [{"up_to": 10}]}, "#/tiers/0/up_to"),
        ({"model": "graduated", "tiers": [{"up_to": None}, {"up_to": None}]}, "#/tiers/1"),
        ({"model": "package", "package_size": 0, "package_amount": "1"}, "#/package_size"),
        (
            {"model": "package", "package_size": 1, "package_amount": "1", "rounding": "x"},
            "#/rounding",
        ),
        ({"model": "percentage", "rate": "101"}, "#/rate"),
        ({"model": "percentage", "rate": "1", "free_events": "1.5"}, "#/free_events"),
        (
            {"model": "percentage", "rate": "1", "min_per_event": 2, "max_per_event": 1},
            "#/max_per_event",
        ),
    ],
)
def test_a_bad_price_is_refused_with_its_path(price: dict[str, Any], pointer: str) -> None:
    with pytest.raises(PriceError) as refused:
        rate(price, 1)
    assert refused.value.code == "invalid_price"
    assert refused.value.errors[0].pointer == pointer


amounts = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
quantities = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)


@st.composite
def tiered(draw: st.DrawFn, model: str) -> dict[str, Any]:
    edges = sorted(set(draw(st.lists(st.integers(1, 10**5), min_size=0, max_size=4))))
    tiers: list[dict[str, Any]] = []
    unit = draw(amounts)
    for up_to in [*edges, None]:
        flat = draw(amounts)
        if model == "volume":  # rates may fall, but never below what the edge charged
            unit = draw(st.decimals(min_value=0, max_value=unit, places=4, allow_nan=False))
            if tiers:
                before = tiers[-1]
                edge = D(before["up_to"])
                floor = edge * D(before["unit_amount"]) + D(before["flat_amount"])
                flat = max(flat, floor - edge * unit)
        else:
            unit = draw(amounts)
        tiers.append({"up_to": up_to, "unit_amount": str(unit), "flat_amount": str(flat)})
    return {"model": model, "tiers": tiers}


@given(tiered("graduated"), quantities)
def test_graduated_is_the_sum_of_its_tiers(price: dict[str, Any], quantity: Decimal) -> None:
    expected, below = D(0), D(0)
    for tier in price["tiers"]:
        top = quantity if tier["up_to"] is None else min(quantity, D(tier["up_to"]))
        if top > below:
            expected += (top - below) * D(tier["unit_amount"]) + D(tier["flat_amount"])
        if tier["up_to"] is not None:
            below = max(below, D(tier["up_to"]))
    assert rate(price, quantity) == expected


@given(tiered("volume"), quantities, quantities)
def test_volume_never_decreases(price: dict[str, Any], a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert rate(price, low) <= rate(price, high)


@given(
    st.integers(1, 1000),
    amounts,
    st.integers(0, 500),
    st.sampled_from(["up", "down"]),
    quantities,
    quantities,
)
def test_packages_are_monotone(
    size: int, price: Decimal, free: int, rounding: str, a: Decimal, b: Decimal
) -> None:
    package = {
        "model": "package",
        "package_size": size,
        "package_amount": str(price),
        "free_units": free,
        "rounding": rounding,
    }
    low, high = sorted((a, b))
    assert rate(package, low) <= rate(package, high)


instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
)


@given(
    st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False),
    instants,
    st.integers(1, 400),
    st.floats(0, 1),
    st.sampled_from(["actual_days", "seconds"]),
)
def test_a_prorated_charge_and_the_credit_of_the_rest_make_the_whole(
    amount: Decimal, start: datetime, days: int, at: float, day_count: Any
) -> None:
    end = start + timedelta(days=days)
    change = start + (end - start) * at
    charged = prorate(amount, start, end, start, change, day_count)
    credited = prorate(amount, start, end, change, end, day_count)
    assert abs(charged + credited - amount) <= D("1e-30") * max(amount, D(1))
    assert D(0) <= charged <= amount


def test_prorate_counts_whole_days_or_seconds() -> None:
    june = (date(2026, 6, 1), date(2026, 7, 1))  # 30 days
    assert prorate(D("30.00"), *june, date(2026, 6, 21), date(2026, 7, 1)) == D("10")
    noon = datetime(2026, 6, 16, 12, tzinfo=UTC)
    assert prorate(D("30.00"), *june, noon, date(2026, 7, 1), "seconds") == D("14.5")
    assert prorate(D("30.00"), *june, date(2026, 5, 1), date(2026, 6, 1)) == 0  # outside


@pytest.mark.parametrize(
    ("anchor", "interval", "count", "interval_count", "dates"),
    [
        (
            date(2026, 1, 31),
            "month",
            4,
            1,
            [date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30), date(2026, 5, 31)],
        ),
        (date(2028, 1, 30), "month", 2, 1, [date(2028, 2, 29), date(2028, 3, 30)]),
        (
            date(2024, 2, 29),
            "year",
            4,
            1,
            [date(2025, 2, 28), date(2026, 2, 28), date(2027, 2, 28), date(2028, 2, 29)],
        ),
        (date(2026, 8, 31), "month", 2, 3, [date(2026, 11, 30), date(2027, 2, 28)]),
        (date(2026, 12, 28), "week", 2, 1, [date(2027, 1, 4), date(2027, 1, 11)]),
        (date(2026, 12, 31), "day", 2, 1, [date(2027, 1, 1), date(2027, 1, 2)]),
    ],
)
def test_billing_dates_clamp_to_short_months_and_come_back(
    anchor: date, interval: str, count: int, interval_count: int, dates: list[date]
) -> None:
    assert billing_dates(anchor, interval, count, interval_count) == dates


def test_an_unknown_interval_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        billing_dates(date(2026, 1, 1), "fortnight", 1)
    assert refused.value.errors[0].pointer == "#/interval"
