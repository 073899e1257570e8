"""Payout batches: once a period, pay out what is owed to each payee (docs/settlement.md).

A run takes the tenant's payout lock (its `payout_heads` row) for the rest of its
transaction, so runs of one tenant take turns. Under it, the period's batch is either
there already (the run creates nothing) or made now: one line per payee and currency
whose payable account has money available, each a ledger transfer
`payout:{batch}:{payee}:{CUR}` debiting `payable:{payee}:{CUR}` and crediting
`cash:{CUR}` (the money leaves), all in one linked batch. Settlements only ever add to a
payable, so the amount read under the lock is still there when the transfer is applied;
the payable's rule (`debits_must_not_exceed_credits`) refuses any overpayment anyway.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit import eventlog
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.ids import new_id
from billfold.kit.invariants import invariant
from billfold.kit.money import minor_units
from billfold.ledger import service as ledger
from billfold.ledger.records import MAX_BATCH, NewTransfer
from billfold.settlement import repository
from billfold.settlement.records import (
    PayoutBatch,
    PayoutBatchNotFound,
    PayoutLine,
    PayoutPayeeNotFound,
)
from billfold.settlement.service import account_id
from billfold.tenants import service as tenants

log = logging.getLogger("billfold.settlement")
SYSTEM = Actor(kind="system", id="payouts", scope=None)

# A period's label: the day (`2026-06-01`, the default), or any label an operator picks
# (`2026-06`, `2026-W23`). One batch per tenant and period.
PERIOD: Final = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.\-]{0,31}$")
MAX_LINES: Final = MAX_BATCH  # payee-currency lines in one batch: one linked ledger batch
TRANSFER_CODE: Final = "payout"
CSV_MEDIA_TYPE: Final = "text/csv; charset=utf-8"
CSV_HEADER: Final = (
    "batch_id",
    "period",
    "payee",
    "currency",
    "amount_minor",
    "amount",
    "transfer_id",
    "created_at",
)


class InvalidPayoutPeriod(InvalidInput):
    code = "invalid_payout_period"
    title = "A payout period is a label such as 2026-06-01"


def default_period(ctx: Context) -> str:
    """The day of `ctx.now` (UTC): the period a scheduled run pays."""
    return ctx.now.date().isoformat()


async def run(session: AsyncSession, ctx: Context, period: str) -> PayoutBatch:
    """The tenant's payout batch for `period`: made now, or the one already made (then
    `created` is False and nothing moves)."""
    if not PERIOD.match(period):
        raise InvalidPayoutPeriod(
            f"{period!r} is not a period: 1 to 32 letters, digits and _ . - (2026-06-01)",
            errors=[FieldError("not a period label", parameter="period")],
        )
    await repository.lock_payout_head(session, ctx.tenant_id, ctx.now)
    found = await repository.batch_by_period(session, ctx.tenant_id, period)
    if found is not None:
        return await _batch(session, found.id, found.period, found.created_at)
    owed = await repository.payables_owed(session, ctx.tenant_id, MAX_LINES)
    batch_id = new_id("pob")
    await repository.insert_batch(
        session,
        {"id": batch_id, "tenant_id": ctx.tenant_id, "period": period, "created_at": ctx.now},
    )
    lines: list[PayoutLine] = []
    transfers: list[NewTransfer] = []
    for row in owed:
        _prefix, payee, currency = row.code.split(":")
        invariant(currency == row.unit, "a payable account's code names its unit")
        line = PayoutLine(
            payee, currency, int(row.available), f"payout:{batch_id}:{payee}:{currency}"
        )
        credit = await account_id(session, ctx, f"cash:{currency}", currency)
        transfers.append(
            NewTransfer(
                line.transfer_id,
                row.id,
                credit,
                line.amount,
                TRANSFER_CODE,
                metadata={"batch_id": batch_id, "payee": payee},
            )
        )
        lines.append(line)
    await ledger.transfer_many(session, ctx, transfers)
    await repository.insert_lines(
        session,
        [
            {
                "batch_id": batch_id,
                "payee": line.payee,
                "currency": line.currency,
                "amount": line.amount,
                "transfer_id": line.transfer_id,
            }
            for line in lines
        ],
    )
    await repository.set_last_batch(session, ctx.tenant_id, batch_id)
    batch = PayoutBatch(batch_id, period, tuple(lines), ctx.now, created=True)
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, 0) + line.amount
    await eventlog.record(
        session,
        ctx,
        "PayoutBatchCreated",
        {
            "batch_id": batch_id,
            "period": period,
            "payees": len({line.payee for line in lines}),
            "totals": totals,
            "transfer_ids": [line.transfer_id for line in lines],
        },
    )
    return batch


async def batch(session: AsyncSession, ctx: Context, batch_id: str) -> PayoutBatch:
    found = await repository.batch_by_id(session, ctx.tenant_id, batch_id)
    if found is None:
        raise PayoutBatchNotFound(f"no payout batch {batch_id!r}")
    return await _batch(session, found.id, found.period, found.created_at)


async def _batch(
    session: AsyncSession, batch_id: str, period: str, created_at: datetime
) -> PayoutBatch:
    rows = await repository.lines_of(session, batch_id)
    lines = tuple(
        PayoutLine(row.payee, row.currency, int(row.amount), row.transfer_id) for row in rows
    )
    return PayoutBatch(batch_id, period, lines, created_at)


def payees(batch: PayoutBatch) -> list[str]:
    return sorted({line.payee for line in batch.lines})


def payee_csv(batch: PayoutBatch, payee: str) -> str:
    """The batch's lines for one payee (one per currency), as CSV with a header:
    `amount_minor` in minor units and `amount` in major units (exact)."""
    lines = [line for line in batch.lines if line.payee == payee]
    if not lines:
        raise PayoutPayeeNotFound(f"payout batch {batch.id} pays nothing to {payee!r}")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for line in lines:
        major = Decimal(line.amount).scaleb(-minor_units(line.currency))
        writer.writerow(
            [
                batch.id,
                batch.period,
                line.payee,
                line.currency,
                line.amount,
                format(major, "f"),
                line.transfer_id,
                batch.created_at.isoformat(),
            ]
        )
    return out.getvalue()


@dataclass
class Report:
    batches: int = 0  # made by this run
    lines: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (tenant id, error)


async def run_every_tenant(
    database: Database, now: datetime, *, on_failure: Callable[[], None] | None = None
) -> Report:
    """The scheduled run (`billfold worker payouts`): each tenant's batch for the day of
    `now`, a tenant per transaction. A tenant whose run fails is rolled back, logged,
    counted and tried again at the next run; the others go on."""
    report = Report()
    async with database.transaction(write=False) as session:
        tenant_ids = [tenant.id for tenant in await tenants.list_tenants(session)]
    for tenant_id in tenant_ids:
        ctx = Context(tenant_id, SYSTEM, f"payouts-{uuid.uuid4().hex[:16]}", now)
        try:
            async with database.transaction() as session:
                made = await run(session, ctx, default_period(ctx))
        except Exception as error:
            log.exception("payouts: the run of tenant %s failed", tenant_id)
            report.failed.append((tenant_id, f"{type(error).__name__}: {error}"))
            if on_failure is not None:
                on_failure()
            continue
        if made.created:
            report.batches += 1
            report.lines += len(made.lines)
    return report
