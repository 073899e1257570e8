"""`billfold ledger verify`, run as the command: ok with counts, or each violation
named and exit 1."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.billing.test_cli_billing import command
from tests.conftest import Harness
from tests.ledger.helpers import account, move

pytestmark = pytest.mark.anyio


async def test_ledger_verify_names_a_corrupted_account(harness: Harness) -> None:
    cash = await account(harness, "cash")
    sales = await account(harness, "sales", type="revenue")
    await move(harness, "sale", cash.id, sales.id, 2900)
    code, out, err = await command(harness, "ledger", "verify")
    assert (code, out.strip()) == (0, "ok: 2 accounts, 1 transfers"), err
    async with harness.database.transaction() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET debits_posted = 1 WHERE id = :id"), {"id": cash.id}
        )
    code, out, _err = await command(harness, "ledger", "verify")
    assert code == 1
    assert f"account {cash.id} (cash): debits_posted is 1, its transfers add up to 2900" in out
