"""The expiry job moves what expired lots still hold to breakage, once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billfold.ledger import service as ledger
from billfold.wallets import holds
from billfold.wallets.expiry import expire_all
from tests.conftest import Harness
from tests.wallets.helpers import balance, credit, events, spend

pytestmark = pytest.mark.anyio


async def breakage(harness: Harness) -> int:
    async with harness.database.transaction(write=False) as session:
        account = await ledger.account_by_code(session, harness.operator(), "breakage:credits")
    return account.credits_posted


async def test_expired_credit_moves_to_breakage_once(harness: Harness) -> None:
    promo = await credit(
        harness, 50, reference="promo", expires_at=harness.clock.now() + timedelta(days=1)
    )
    await credit(harness, 20, reference="paid")
    await spend(harness, 30, "use")  # 30 of the promotion (it is drawn first)
    harness.clock.advance(timedelta(days=2))

    report = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])
    again = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])

    assert (report.lots_expired, report.breakage) == (1, {"credits": 20})
    assert (again.lots_expired, again.breakage) == (0, {})
    assert await breakage(harness) == 20
    assert (await balance(harness)).available == 20
    logged = await events(harness, "WalletCreditExpired")
    assert logged == [
        {
            "wallet_id": promo.wallet_id,
            "lot_id": promo.id,
            "unit": "credits",
            "amount": 20,
            "transfer_ids": [f"wex:{promo.id}:30"],
        }
    ]


async def test_held_credit_on_an_expired_lot_is_swept_after_its_release(
    harness: Harness,
) -> None:
    await credit(harness, 50, reference="promo", expires_at=harness.clock.now() + timedelta(days=1))
    async with harness.database.transaction() as session:
        await holds.create_hold(
            session,
            harness.operator(),
            customer_id="ada",
            unit="credits",
            amount=20,
            hold_id="job",
            timeout_s=7 * 24 * 3600,
        )
    harness.clock.advance(timedelta(days=2))

    first = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])
    async with harness.database.transaction() as session:
        await holds.release_hold(session, harness.operator(), hold_id="job")
    second = await expire_all(harness.database, harness.clock.now(), [harness.tenant_id])

    assert (first.breakage, second.breakage) == ({"credits": 30}, {"credits": 20})
    assert await breakage(harness) == 50


async def test_the_job_finds_the_tenants_with_something_due(harness: Harness) -> None:
    await credit(harness, 5, reference="promo", expires_at=harness.clock.now() + timedelta(days=1))
    harness.clock.advance(timedelta(days=2))

    report = await expire_all(harness.database, harness.clock.now())

    assert report.breakage.get("credits", 0) >= 5
    assert await breakage(harness) == 5
