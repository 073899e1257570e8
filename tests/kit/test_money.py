"""Money: integer minor units and a currency, rounded once with a named mode."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit.invariants import InvariantViolation
from billfold.kit.money import Money, round_minor


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
