"""Credit, spend and balance through the service functions other domains call."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billfold.ledger import service as ledger
from billfold.ledger.records import AmountNotPositive
from billfold.ledger.verify import verify
from billfold.wallets import service as wallets
from billfold.wallets.records import (
    InsufficientBalance,
    LotExistsWithDifferentFields,
    SpendExistsWithDifferentFields,
)
from billfold.wallets.service import UnknownUnit
from tests.conftest import Harness
from tests.wallets.helpers import balance, credit, event_types, events, spend

pytestmark = pytest.mark.anyio


async def test_a_credit_is_a_lot_funded_from_the_ledger(harness: Harness) -> None:
    lot = await credit(harness, 500, reference="welcome")

    assert (lot.amount, lot.source, lot.funded_by) == (500, "grant", "wallet_funding:credits")
    now = await balance(harness)
    assert (now.posted, now.held, now.available) == (500, 0, 500)
    async with harness.database.transaction(write=False) as session:
        account = await ledger.account(session, harness.operator(), lot.account_id)
        funding = await ledger.account_by_code(
            session, harness.operator(), "wallet_funding:credits"
        )
        checked = await verify(session, harness.tenant_id)
    assert account.code == f"wallet:{lot.id}"
    assert (account.type, account.rule) == ("liability", "debits_must_not_exceed_credits")
    assert account.credits_posted == 500
    assert funding.debits_posted == 500
    assert checked.violations == []
    credited = await events(harness, "WalletCredited")
    assert credited[0]["transfer_ids"] == [lot.transfer_id]
    assert credited[0]["amount"] == 500


async def test_a_credit_again_is_the_same_lot_and_other_fields_are_a_conflict(
    harness: Harness,
) -> None:
    first = await credit(harness, 500, reference="welcome")
    again = await credit(harness, 500, reference="welcome")

    assert again == first
    assert (await balance(harness)).available == 500
    with pytest.raises(LotExistsWithDifferentFields):
        await credit(harness, 600, reference="welcome")
    with pytest.raises(LotExistsWithDifferentFields):
        await credit(harness, 500, reference="welcome", customer="bob")


async def test_payment_and_credit_note_credits_are_funded_by_cash_and_revenue(
    harness: Harness,
) -> None:
    paid = await credit(harness, 2000, unit="USD", source="payment", reference="pay-1")
    noted = await credit(harness, 300, unit="USD", source="credit_note", reference="cn-1")

    assert (paid.funded_by, noted.funded_by) == ("cash:USD", "revenue:USD")
    assert (await balance(harness, unit="USD")).available == 2300


async def test_spend_draws_lots_in_order_in_one_batch(harness: Harness) -> None:
    later = harness.clock.now() + timedelta(days=30)
    sooner = harness.clock.now() + timedelta(days=10)
    paid = await credit(harness, 100, reference="paid", priority=100)
    promo_late = await credit(harness, 50, reference="promo-late", priority=10, expires_at=later)
    promo_soon = await credit(harness, 50, reference="promo-soon", priority=10, expires_at=sooner)
    promo_forever = await credit(harness, 50, reference="promo-forever", priority=10)

    spent = await spend(harness, 180, "use-1")

    # Priority 10 before 100; within it the earliest expiry first, never-expiring last.
    assert [(leg.lot_id, leg.amount) for leg in spent.legs] == [
        (promo_soon.id, 50),
        (promo_late.id, 50),
        (promo_forever.id, 50),
        (paid.id, 30),
    ]
    assert spent.transfer_ids == ["wsp:use-1:0", "wsp:use-1:1", "wsp:use-1:2", "wsp:use-1:3"]
    assert (spent.amount, spent.balance_after) == (180, 70)
    async with harness.database.transaction(write=False) as session:
        revenue = await ledger.account_by_code(session, harness.operator(), "usage_revenue:credits")
    assert revenue.credits_posted == 180
    logged = await events(harness, "WalletSpent")
    assert logged[0]["transfer_ids"] == spent.transfer_ids


async def test_oldest_first_among_equal_lots(harness: Harness) -> None:
    first = await credit(harness, 10, reference="a")
    harness.clock.advance(timedelta(seconds=1))
    second = await credit(harness, 10, reference="b")

    spent = await spend(harness, 15, "use")

    assert [(leg.lot_id, leg.amount) for leg in spent.legs] == [(first.id, 10), (second.id, 5)]


async def test_a_spend_retried_returns_the_same_and_moves_nothing_more(harness: Harness) -> None:
    await credit(harness, 100, reference="top")
    first = await spend(harness, 40, "use-1")
    again = await spend(harness, 40, "use-1")

    assert again == first
    assert (await balance(harness)).available == 60
    with pytest.raises(SpendExistsWithDifferentFields):
        await spend(harness, 41, "use-1")


async def test_short_balance_is_402_with_balance_and_shortfall(harness: Harness) -> None:
    await credit(harness, 30, reference="top")

    with pytest.raises(InsufficientBalance) as refused:
        await spend(harness, 50, "use-1")

    assert refused.value.status == 402
    assert refused.value.extra["balance"] == 30
    assert refused.value.extra["shortfall"] == 20
    assert (await balance(harness)).available == 30


async def test_allow_partial_draws_what_there_is(harness: Harness) -> None:
    await credit(harness, 30, reference="top")

    spent = await spend(harness, 50, "invoice-1", allow_partial=True)

    assert (spent.amount, spent.shortfall, spent.balance_after) == (30, 20, 0)
    empty = await spend(harness, 50, "invoice-2", allow_partial=True)
    assert (empty.amount, empty.legs) == (0, ())


async def test_a_customer_without_a_wallet_has_nothing(harness: Harness) -> None:
    nothing = await balance(harness, customer="nobody")

    assert (nothing.wallet_id, nothing.available) == (None, 0)
    with pytest.raises(InsufficientBalance):
        await spend(harness, 1, "use", customer="nobody")


async def test_expired_lots_are_not_spent_even_before_the_expiry_job(harness: Harness) -> None:
    await credit(
        harness, 50, reference="promo", expires_at=harness.clock.now() + timedelta(hours=1)
    )
    await credit(harness, 20, reference="paid")
    harness.clock.advance(timedelta(hours=2))

    assert (await balance(harness)).available == 20
    with pytest.raises(InsufficientBalance):
        await spend(harness, 30, "use")


async def test_bad_input_is_refused_with_stable_codes(harness: Harness) -> None:
    with pytest.raises(UnknownUnit):
        await credit(harness, 10, unit="XYZ")
    with pytest.raises(UnknownUnit):
        await credit(harness, 10, unit="Not A Unit")
    with pytest.raises(AmountNotPositive):
        await credit(harness, 0)
    with pytest.raises(AmountNotPositive):
        await spend(harness, -5, "use")


async def test_thresholds_fire_once_per_crossing(harness: Harness) -> None:
    await credit(harness, 100, reference="top")
    async with harness.database.transaction() as session:
        await wallets.set_low_balance(
            session, harness.operator(), customer_id="ada", unit="credits", low_balance=50
        )

    await spend(harness, 40, "use-1")  # 60: above the threshold
    await spend(harness, 20, "use-2")  # 40: crosses it
    await spend(harness, 10, "use-3")  # 30: still below, no second entry
    await spend(harness, 30, "use-4")  # 0: exhausted
    await credit(harness, 100, reference="top-2")  # back above: re-armed
    await spend(harness, 60, "use-5")  # 40: crosses it again

    assert [
        t for t in await event_types(harness) if t not in ("WalletSpent", "WalletCredited")
    ] == [
        "WalletUpdated",
        "WalletBalanceLow",
        "WalletExhausted",
        "WalletBalanceLow",
    ]
