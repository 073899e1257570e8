"""What settlement's tests share: split tables and settlements through the API, ledger
balances by account code, and the ledger verified."""

from __future__ import annotations

from typing import Any

import httpx

from billfold.ledger import service as ledger
from billfold.ledger.records import AccountNotFound
from billfold.ledger.verify import verify
from tests.conftest import Harness

PUBLIC = [("ada", "creator", "50"), ("ivy", "investor", "30"), ("ole", "investor", "20")]


async def put_split(
    harness: Harness, app: str, shares: list[tuple[str, str, str]] = PUBLIC
) -> httpx.Response:
    body = {"shares": [{"payee": p, "role": r, "percent": s} for p, r, s in shares]}
    return await harness.client.put(f"/v1/apps/{app}/splits", json=body, headers=harness.admin)


async def settle(harness: Harness, id: str, type: str, amount: int, **more: Any) -> httpx.Response:
    body = {"id": id, "type": type, "amount": amount, "currency": "USD", **more}
    return await harness.post("/v1/settlements", body)


async def net(harness: Harness, code: str) -> int | None:
    """credits_posted - debits_posted of the account `code`; None if there is none."""
    async with harness.database.transaction(write=False) as session:
        try:
            found = await ledger.account_by_code(session, harness.operator(), code)
        except AccountNotFound:
            return None
    return found.credits_posted - found.debits_posted


async def assert_ledger_verifies(harness: Harness) -> None:
    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
    assert result.ok, result.describe()
