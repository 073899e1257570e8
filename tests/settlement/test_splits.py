"""The arithmetic of settlement, without a database: the fee, rounded once half to even;
largest-remainder splits that never create or lose a minor unit; split tables checked."""

from __future__ import annotations

import itertools
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit.context import Context
from billfold.settlement.records import Policy, SettlementRequest, SplitTable
from billfold.settlement.service import plan
from billfold.settlement.splits import (
    MILLIONTHS,
    DuplicatePayee,
    InvalidPayee,
    Share,
    SplitCreatorMissing,
    SplitShareNotPositive,
    SplitSharesNot100,
    SplitShareTooPrecise,
    check_shares,
    fee_of,
    largest_remainder,
)
from tests.conftest import START
from tests.factories import OPERATOR

MAX_AMOUNT = 2**63 - 1


def test_the_fee_is_rounded_once_half_to_even() -> None:
    fee = Decimal("3.5")
    assert fee_of(10_000, fee) == 350
    assert fee_of(100, fee) == 4  # 3.5 -> 4 (even)
    assert fee_of(300, fee) == 10  # 10.5 -> 10 (even)
    assert fee_of(10, fee) == 0  # 0.35
    assert fee_of(20, fee) == 1  # 0.7
    assert fee_of(MAX_AMOUNT, Decimal("99.9999")) < MAX_AMOUNT
    assert fee_of(1234, Decimal(0)) == 0


def test_largest_remainder_gives_the_leftover_units_to_the_largest_remainders() -> None:
    third = [333_334, 333_333, 333_333]
    assert largest_remainder(100, third) == [34, 33, 33]
    assert largest_remainder(2, third) == [1, 1, 0]  # remainders equal: earlier first
    # 9650 by 50/30/20 is exact
    assert largest_remainder(9650, [500_000, 300_000, 200_000]) == [4825, 2895, 1930]
    # 7 by 10/45/45: exact parts 0.7, 3.15, 3.15 -> floors 0, 3, 3; one unit left, to 0.7
    assert largest_remainder(7, [100_000, 450_000, 450_000]) == [1, 3, 3]
    assert largest_remainder(0, third) == [0, 0, 0]


def share_tables() -> st.SearchStrategy[list[int]]:
    """Positive shares in millionths that sum to 100%: cuts of 1..1,000,000."""
    return st.lists(
        st.integers(min_value=1, max_value=MILLIONTHS - 1), min_size=0, max_size=12, unique=True
    ).map(lambda cuts: _parts(sorted(cuts)))


def _parts(cuts: list[int]) -> list[int]:
    edges = [0, *cuts, MILLIONTHS]
    return [b - a for a, b in itertools.pairwise(edges)]


@given(
    amount=st.one_of(st.integers(0, 10_000), st.integers(0, MAX_AMOUNT)),
    shares=share_tables(),
    percent=st.decimals(min_value=0, max_value=Decimal("99.9999"), places=4),
)
def test_no_minor_unit_is_created_or_lost(amount: int, shares: list[int], percent: Decimal) -> None:
    fee = fee_of(amount, percent)
    assert 0 <= fee <= amount
    assert abs(Fraction(fee) - Fraction(amount) * Fraction(percent) / 100) <= Fraction(1, 2)
    parts = largest_remainder(amount - fee, shares)
    assert fee + sum(parts) == amount
    for part, share in zip(parts, shares, strict=True):
        exact = Fraction(amount - fee) * share / MILLIONTHS
        assert part >= 0
        assert abs(part - exact) < 1  # each part is its exact share, floored or raised


@given(
    amount=st.integers(1, 10**15),
    shares=share_tables(),
    percent=st.decimals(min_value=0, max_value=Decimal("99.9999"), places=4),
)
def test_a_public_purchase_settles_the_fee_and_shares_to_the_amount(
    amount: int, shares: list[int], percent: Decimal
) -> None:
    table = SplitTable(
        "app",
        1,
        tuple(
            Share(f"p{n}", "creator" if n == 0 else "investor", Decimal(m) / 10_000)
            for n, m in enumerate(shares)
        ),
        START,
    )
    ctx = Context("ten", OPERATOR, "test", START)
    request = SettlementRequest("s1", "public_app_purchase", amount, "USD", app_id="app")
    made = plan(ctx, request, Policy("platform", percent), table)
    assert sum(part.amount for part in made.parts) == amount
    assert made.fee + sum(p.amount for p in made.parts if p.role != "fee") == amount
    assert len(made.transfer_ids) == len(made.parts) + 1


@pytest.mark.parametrize(
    "type",
    ["platform_subscription", "private_app_purchase", "investor_funding", "public_app_purchase"],
)
def test_self_hosted_plans_no_fee_and_no_split(type: str) -> None:
    table = SplitTable("app", 1, (Share("ada", "creator", Decimal(100)),), START)
    ctx = Context("ten", OPERATOR, "test", START)
    request = SettlementRequest("s1", type, 10_000, "USD", app_id="app")  # type: ignore[arg-type]
    made = plan(ctx, request, Policy("self-hosted", Decimal("3.5")), table)
    assert (made.fee, made.fee_percent, made.split_version) == (0, None, None)
    assert [(p.role, p.account, p.amount) for p in made.parts] == [
        ("revenue", "revenue:USD", 10_000)
    ]


def shares(*items: tuple[str, str, str]) -> list[Share]:
    return [Share(payee, role, Decimal(percent)) for payee, role, percent in items]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "refusal"),
    [
        (shares(("ada", "creator", "60"), ("bo", "investor", "39.99")), SplitSharesNot100),
        (shares(("ada", "creator", "101"), ("bo", "investor", "-1")), SplitShareNotPositive),
        (shares(("ada", "creator", "100"), ("bo", "investor", "0")), SplitShareNotPositive),
        (
            shares(("ada", "creator", "50.00001"), ("bo", "investor", "49.99999")),
            SplitShareTooPrecise,
        ),
        (shares(("ada:x", "creator", "100")), InvalidPayee),
        (shares((".hidden", "creator", "100")), InvalidPayee),
        (shares(("ada", "creator", "50"), ("ada", "investor", "50")), DuplicatePayee),
        (shares(("ada", "investor", "100")), SplitCreatorMissing),
        (shares(("ada", "creator", "50"), ("bo", "creator", "50")), SplitCreatorMissing),
        ([], SplitCreatorMissing),
    ],
)
def test_bad_split_tables_are_refused_with_their_codes(
    table: list[Share], refusal: type[Exception]
) -> None:
    with pytest.raises(refusal):
        check_shares(table)


def test_a_good_table_is_kept_exactly_in_its_order() -> None:
    checked = check_shares(
        shares(
            ("ada", "creator", "33.3334"),
            ("bo", "investor", "33.3333"),
            ("cy", "investor", "33.3333"),
        )
    )
    assert [(s.payee, s.percent, s.millionths) for s in checked] == [
        ("ada", Decimal("33.3334"), 333_334),
        ("bo", Decimal("33.3333"), 333_333),
        ("cy", Decimal("33.3333"), 333_333),
    ]
    assert str(check_shares(shares(("ada", "creator", "100.00")))[0].percent) == "100"
