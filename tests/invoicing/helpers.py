"""What the invoicing tests share: an open invoice in one line, the tenant's ledger as
balances by account code, the transfers of an event, and the event log's entries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billfold.billing.close import CloseSettings
from billfold.billing.run import run
from billfold.invoicing import deps
from billfold.ledger import repository as ledger_rows
from billfold.ledger.verify import verify
from tests.billing.test_period_close import close, invoices, subscribe
from tests.conftest import Harness, new_harness

MAY_1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

# A seller in Germany charging German buyers 19% VAT: the pro plan's 29.00 is 34.51.
TAXED = """
seller:
  name: Example GmbH
  country: DE
taxes:
  rates:
    - {country: DE, rate: "19", name: VAT}
"""


async def taxed_harness(tmp_path: Path, database_url: str) -> Harness:
    path = tmp_path / "invoicing.yaml"
    path.write_text(TAXED)
    return await new_harness(database_url, invoicing_file=str(path))


async def open_invoice(harness: Harness, customer: str, *, taxed: bool = False) -> dict[str, Any]:
    """The customer's first invoice on pro, finalized by period close: open."""
    harness.clock.travel_to(MAY_1)
    if taxed:
        body = {"name": customer.title(), "billing": {"country": "DE"}}
        answer = await harness.client.put(
            f"/v1/customers/{customer}", json=body, headers=harness.admin
        )
        assert answer.status_code in (200, 201), answer.text
    await subscribe(harness, customer, plan="pro")
    if taxed:
        now = harness.clock.now()
        settings = CloseSettings(invoicing=deps.load(harness.settings.invoicing_file))
        report = await run(
            harness.database, now, now=now, settings=settings, tenant_id=harness.tenant_id
        )
        assert not report.failed, report.failed
    else:
        await close(harness)
    (invoice,) = await invoices(harness, customer)
    assert invoice["status"] == "open", invoice
    return invoice


async def customer_id(harness: Harness, customer: str) -> str:
    answer = await harness.get(f"/v1/customers/{customer}")
    return str(answer.json()["id"])


async def balances(harness: Harness) -> dict[str, int]:
    """Each of the tenant's accounts by code: its posted debits less its posted credits
    (an asset's balance; a revenue's or liability's negated)."""
    async with harness.database.transaction(write=False) as session:
        rows = await ledger_rows.accounts(session, harness.tenant_id)
    return {row.code: int(row.debits_posted) - int(row.credits_posted) for row in rows}


async def transfers(harness: Harness, ids: list[str]) -> list[tuple[str, str, str, int]]:
    """(id, debit code, credit code, amount) of each transfer, in the order given."""
    async with harness.database.transaction(write=False) as session:
        rows = await ledger_rows.transfers_by_ids(session, harness.tenant_id, ids)
        accounts = {
            row.id: row.code for row in await ledger_rows.accounts(session, harness.tenant_id)
        }
    found = {row.id: row for row in rows}
    return [
        (
            transfer_id,
            accounts[found[transfer_id].debit_account_id],
            accounts[found[transfer_id].credit_account_id],
            int(found[transfer_id].amount),
        )
        for transfer_id in ids
    ]


async def entries(harness: Harness, type: str) -> list[dict[str, Any]]:
    """The data of the tenant's event-log entries of `type`, oldest first."""
    answer = await harness.get("/v1/audit/events", params={"type": type, "limit": 500})
    assert answer.status_code == 200, answer.text
    return [event["data"] for event in answer.json()["events"]]


async def verified(harness: Harness) -> None:
    """`billfold ledger verify` finds nothing wrong with the tenant's ledger."""
    async with harness.database.transaction(write=False) as session:
        found = await verify(session, harness.tenant_id)
    assert not found.violations, found.violations
