"""`billfold wallets expire`, run as the command, and the worker's source on the runner."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from billfold.kit.worker import Runner
from billfold.ledger.tables import ledger_accounts
from billfold.wallets.expiry import ExpirySource
from tests.billing.test_cli_billing import command
from tests.conftest import Harness
from tests.wallets.helpers import balance, credit

pytestmark = pytest.mark.anyio


async def breakage(harness: Harness) -> int:
    """What the tenant's `breakage:credits` has been credited (0 before it exists)."""
    async with harness.database.transaction(write=False) as session:
        found = await session.execute(
            select(ledger_accounts.c.credits_posted).where(
                ledger_accounts.c.tenant_id == harness.tenant_id,
                ledger_accounts.c.code == "breakage:credits",
            )
        )
        return int(found.scalar_one_or_none() or 0)


async def test_wallets_expire_moves_expired_credit_to_breakage(harness: Harness) -> None:
    # The command runs at the real time, long after the harness's clock: the promotion
    # has expired by then.
    await credit(harness, 40, reference="promo", expires_at=harness.clock.now() + timedelta(days=1))
    await credit(harness, 10, reference="paid")

    code, out, err = await command(harness, "wallets", "expire")
    again, out_again, _err = await command(harness, "wallets", "expire")

    assert code == 0, err
    assert "1 lots expired (40 credits to breakage)" in out
    assert again == 0
    assert "0 lots expired (nothing to breakage)" in out_again
    assert await breakage(harness) == 40
    assert (await balance(harness)).posted == 10


async def test_the_worker_expires_what_is_due_and_stops(harness: Harness) -> None:
    await credit(harness, 25, reference="promo", expires_at=harness.clock.now() + timedelta(days=1))
    harness.clock.advance(timedelta(days=2))
    source = ExpirySource(harness.database, harness.clock, idle_s=0.05)
    stop = asyncio.Event()
    runner = asyncio.create_task(Runner("wallets", source, batch=10).run(stop))

    for _ in range(600):  # other tests' tenants may be due too: wait for ours
        if await breakage(harness) == 25:
            break
        await asyncio.sleep(0.05)
    stop.set()
    progress = await runner

    assert await breakage(harness) == 25
    assert progress.failures == 0
