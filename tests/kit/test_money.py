"""Money: integer minor units and a currency, rounded once with a named mode."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit.invariants import InvariantViolation
from billfold.kit.money import Money, round_minor
from billfold.money import UnknownCurrency, minor_units, round_money, to_minor


@pytest.mark.parametrize(
    ("amount", "rounding", "minor"),
    [
        ("2.5", ROUND_HALF_EVEN, 2),
        ("3.5", ROUND_HALF_EVEN, 4),
        ("2.5", ROUND_HALF_UP, 3),
        ("-2.5", ROUND_HALF_UP, -3),
        ("2.99", ROUND_DOWN, 2),
        ("1496.7741935483870967741935", ROUND_HALF_EVEN, 1497),
    ],
)
def test_an_amount_is_rounded_once_with_the_mode_named(
    amount: str, rounding: str, minor: int
) -> None:
    assert round_minor(Decimal(amount), rounding=rounding) == minor


@given(st.decimals(min_value=-(10**18), max_value=10**18, places=6))
def test_rounding_moves_an_amount_by_at_most_half_a_minor_unit(amount: Decimal) -> None:
    rounded = round_minor(amount, rounding=ROUND_HALF_EVEN)
    assert type(rounded) is int
    assert abs(Decimal(rounded) - amount) <= Decimal("0.5")


def test_money_adds_up_only_within_one_currency() -> None:
    assert Money(1050, "EUR") + Money(-50, "EUR") == Money(1000, "EUR")
    with pytest.raises(InvariantViolation):
        _ = Money(1, "EUR") + Money(1, "USD")
    with pytest.raises(InvariantViolation):
        Money(1, "euro")
    with pytest.raises(InvariantViolation):
        round_minor(Decimal("NaN"), rounding=ROUND_HALF_EVEN)


def test_an_amount_beyond_64_bits_is_refused_however_many_digits_it_has() -> None:
    # 29 digits: more than the default decimal context's precision of 28
    assert round_minor(Decimal("-9223372036854775807.5"), rounding=ROUND_DOWN) == -(2**63 - 1)
    with pytest.raises(InvariantViolation):
        round_minor(Decimal("-9999999999999999999999999999.5"), rounding=ROUND_HALF_EVEN)


# ISO 4217's minor units, from its own table. IQD is where CLDR's display digits (0) and
# ISO (3) part; CLF and UYW are the 4-digit units of account.
@pytest.mark.parametrize(
    ("currency", "units"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("BHD", 3),
        ("IQD", 3),
        ("CLF", 4),
        ("UYW", 4),
    ],
)
def test_minor_units_are_iso_4217s(currency: str, units: int) -> None:
    assert minor_units(currency) == units


@pytest.mark.parametrize("currency", ["usd", "XXX", "XAU", "US", "ZZZ", ""])
def test_anything_else_is_an_unknown_currency(currency: str) -> None:
    with pytest.raises(UnknownCurrency) as refused:
        minor_units(currency, pointer="#/prices/0/currency")
    assert refused.value.code == "unknown_currency"
    assert refused.value.errors[0].pointer == "#/prices/0/currency"


@pytest.mark.parametrize(
    ("amount", "currency", "rounded"),
    [
        ("10.005", "USD", "10.01"),
        ("10.004999", "USD", "10.00"),
        ("-10.005", "USD", "-10.01"),  # half up is away from zero, as invoices round
        ("1234.5", "JPY", "1235"),
        ("0.0005", "BHD", "0.001"),
        ("29", "EUR", "29.00"),
    ],
)
def test_round_money_rounds_once_half_up_to_minor_units(
    amount: str, currency: str, rounded: str
) -> None:
    result = round_money(Decimal(amount), currency)
    assert str(result) == rounded
    assert to_minor(Decimal(amount), currency) == int(
        Decimal(rounded).scaleb(minor_units(currency))
    )


@given(
    st.decimals(min_value=-(10**12), max_value=10**12, allow_nan=False, allow_infinity=False),
    st.sampled_from(["USD", "JPY", "BHD", "CLF"]),
)
def test_rounded_money_is_within_half_a_minor_unit_and_rounds_to_itself(
    amount: Decimal, currency: str
) -> None:
    rounded = round_money(amount, currency)
    unit = Decimal(1).scaleb(-minor_units(currency))
    assert abs(rounded - amount) <= unit / 2
    assert round_money(rounded, currency) == rounded
    assert -rounded == round_money(-amount, currency)  # symmetric: half up away from zero
