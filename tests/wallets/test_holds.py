"""Holds: reserve, settle to the actual amount (less, equal, more), release, time out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from billfold.ledger.verify import verify
from billfold.wallets import holds
from billfold.wallets.expiry import expire_all
from billfold.wallets.records import (
    Hold,
    HoldAlreadyResolved,
    HoldExistsWithDifferentFields,
    HoldExpired,
    InsufficientBalance,
)
from tests.conftest import Harness
from tests.wallets.helpers import balance, credit, events, spend

pytestmark = pytest.mark.anyio


async def hold(harness: Harness, amount: int, hold_id: str = "job-1", **kw: Any) -> Hold:
    async with harness.database.transaction() as session:
        return await holds.create_hold(
            session,
            harness.operator(),
            customer_id="ada",
            unit="credits",
            amount=amount,
            hold_id=hold_id,
            **kw,
        )


async def settle(harness: Harness, amount: int, hold_id: str = "job-1") -> Hold:
    async with harness.database.transaction() as session:
        return await holds.settle_hold(session, harness.operator(), hold_id=hold_id, amount=amount)


async def release(harness: Harness, hold_id: str = "job-1") -> Hold:
    async with harness.database.transaction() as session:
        return await holds.release_hold(session, harness.operator(), hold_id=hold_id)


async def ledger_ok(harness: Harness) -> None:
    async with harness.database.transaction(write=False) as session:
        checked = await verify(session, harness.tenant_id)
    assert checked.violations == [], checked.describe()


async def test_a_hold_reserves_from_the_lots_in_order(harness: Harness) -> None:
    first = await credit(harness, 60, reference="a", priority=1)
    second = await credit(harness, 100, reference="b", priority=2)

    held = await hold(harness, 80)

    assert [(leg.lot_id, leg.amount) for leg in held.legs] == [(first.id, 60), (second.id, 20)]
    now = await balance(harness)
    assert (now.posted, now.held, now.available) == (160, 80, 80)
    assert (await hold(harness, 80)) == held  # the same hold id again: the same hold
    with pytest.raises(HoldExistsWithDifferentFields):
        await hold(harness, 81)
    with pytest.raises(InsufficientBalance):
        await spend(harness, 81, "too-much")  # the hold is not available to spend
    created = await events(harness, "WalletHoldCreated")
    assert created[0]["transfer_ids"] == held.transfer_ids


async def test_a_hold_larger_than_the_balance_is_402(harness: Harness) -> None:
    await credit(harness, 50, reference="a")

    with pytest.raises(InsufficientBalance) as refused:
        await hold(harness, 80)

    assert refused.value.extra["shortfall"] == 30
    assert (await balance(harness)).held == 0


async def test_settling_for_less_posts_in_order_and_releases_the_rest(harness: Harness) -> None:
    await credit(harness, 60, reference="a", priority=1)
    await credit(harness, 100, reference="b", priority=2)
    await hold(harness, 80)

    settled = await settle(harness, 70)

    assert (settled.status, settled.settled_amount) == ("settled", 70)
    now = await balance(harness)
    assert (now.posted, now.held, now.available) == (90, 0, 90)
    assert (await settle(harness, 70)) == settled  # a retry: the same answer
    with pytest.raises(HoldAlreadyResolved):
        await settle(harness, 60)
    with pytest.raises(HoldAlreadyResolved):
        await release(harness)
    await ledger_ok(harness)


async def test_settling_for_more_draws_the_excess_or_is_402(harness: Harness) -> None:
    await credit(harness, 100, reference="a")
    await hold(harness, 40)

    with pytest.raises(InsufficientBalance):
        await settle(harness, 150)  # 40 held + 60 available: 50 short
    assert (await balance(harness)).held == 40  # the hold stays as it was

    settled = await settle(harness, 90)

    assert settled.settled_amount == 90
    assert len(settled.resolution_transfer_ids) == 2  # the post and the excess
    assert (await balance(harness)).available == 10
    await ledger_ok(harness)


async def test_release_gives_everything_back(harness: Harness) -> None:
    await credit(harness, 100, reference="a")
    await hold(harness, 40)

    released = await release(harness)

    assert released.status == "released"
    assert (await balance(harness)).available == 100
    assert (await release(harness)) == released
    logged = await events(harness, "WalletHoldReleased")
    assert logged[0]["transfer_ids"] == list(released.resolution_transfer_ids)


async def test_a_timed_out_hold_is_released_by_the_expiry_job(harness: Harness) -> None:
    await credit(harness, 100, reference="a")
    await hold(harness, 40, timeout_s=60)
    harness.clock.advance(timedelta(seconds=61))

    with pytest.raises(HoldExpired):
        await settle(harness, 10)
    report = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])

    assert (report.pending_expired, report.holds_expired) == (1, 1)
    async with harness.database.transaction(write=False) as session:
        expired = await holds.get_hold(session, harness.operator(), "job-1")
    assert expired.status == "expired"
    assert expired.resolution_transfer_ids == ("whd:job-1:0~expired",)
    assert (await balance(harness)).available == 100
    again = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])
    assert (again.pending_expired, again.holds_expired) == (0, 0)
    await ledger_ok(harness)


async def test_releasing_a_timed_out_hold_expires_it(harness: Harness) -> None:
    await credit(harness, 100, reference="a")
    await hold(harness, 40, timeout_s=60)
    harness.clock.advance(timedelta(seconds=61))

    released = await release(harness)

    assert released.status == "expired"
    assert (await balance(harness)).available == 100
    await ledger_ok(harness)
