"""All SQL for invoices, their lines, payments, pending lines and invoice numbers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers.tables import customers
from billfold.invoicing.tables import (
    credit_notes,
    invoice_lines,
    invoice_numbers,
    invoice_payments,
    invoices,
    pending_lines,
)
from billfold.kit.db import Record
from billfold.kit.sql import update_rows
from billfold.ledger.tables import ledger_accounts, ledger_transfers


def _with_customer() -> Any:
    return select(
        invoices,
        customers.c.external_id.label("customer_external_id"),
        customers.c.test_clock_id.label("customer_test_clock_id"),
    ).join(customers, customers.c.id == invoices.c.customer_id)


async def by_id(
    session: AsyncSession, tenant_id: str, invoice_id: str, *, lock: bool = False
) -> Record | None:
    statement = _with_customer().where(
        invoices.c.tenant_id == tenant_id, invoices.c.id == invoice_id
    )
    if lock:
        statement = statement.with_for_update(of=invoices)
    return (await session.execute(statement)).one_or_none()


async def by_ids(
    session: AsyncSession, tenant_id: str, invoice_ids: Sequence[str], *, lock: bool = False
) -> list[Record]:
    """The tenant's invoices of these ids, in id order (locked in that order: two batches
    that overlap wait for each other, never deadlock)."""
    statement = (
        _with_customer()
        .where(invoices.c.tenant_id == tenant_id, invoices.c.id.in_(sorted(set(invoice_ids))))
        .order_by(invoices.c.id)
    )
    if lock:
        statement = statement.with_for_update(of=invoices)
    return list((await session.execute(statement)).all())


async def of_subscription_period(
    session: AsyncSession, subscription_id: str, period_end: datetime
) -> Record | None:
    statement = select(invoices.c.id).where(
        invoices.c.subscription_id == subscription_id, invoices.c.period_end == period_end
    )
    return (await session.execute(statement)).one_or_none()


async def page(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer_id: str | None,
    statuses: Sequence[str],
    period_from: datetime | None,
    period_to: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """Invoices newest first, keyset-paged on (created_at, id)."""
    statement = _with_customer().where(invoices.c.tenant_id == tenant_id)
    if customer_id is not None:
        statement = statement.where(invoices.c.customer_id == customer_id)
    if statuses:
        statement = statement.where(invoices.c.status.in_(list(statuses)))
    if period_from is not None:
        statement = statement.where(invoices.c.period_end > period_from)
    if period_to is not None:
        statement = statement.where(invoices.c.period_start < period_to)
    if after is not None:
        created_at, invoice_id = after
        statement = statement.where(
            (invoices.c.created_at < created_at)
            | ((invoices.c.created_at == created_at) & (invoices.c.id < invoice_id))
        )
    statement = statement.order_by(invoices.c.created_at.desc(), invoices.c.id.desc()).limit(limit)
    return list((await session.execute(statement)).all())


async def lines_of(session: AsyncSession, invoice_ids: Sequence[str]) -> list[Record]:
    statement = (
        select(invoice_lines)
        .where(invoice_lines.c.invoice_id.in_(list(invoice_ids)))
        .order_by(invoice_lines.c.invoice_id, invoice_lines.c.position)
    )
    return list((await session.execute(statement)).all())


async def payments_of(session: AsyncSession, invoice_ids: Sequence[str]) -> list[Record]:
    statement = (
        select(invoice_payments)
        .where(invoice_payments.c.invoice_id.in_(list(invoice_ids)))
        .order_by(invoice_payments.c.paid_at, invoice_payments.c.id)
    )
    return list((await session.execute(statement)).all())


async def insert_invoices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(invoices), list(rows))


async def insert_lines(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(invoice_lines), list(rows))


async def delete_lines(session: AsyncSession, invoice_id: str, kinds: Sequence[str]) -> None:
    await session.execute(
        delete(invoice_lines).where(
            invoice_lines.c.invoice_id == invoice_id, invoice_lines.c.kind.in_(list(kinds))
        )
    )


async def update_lines(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Update lines by one statement: each row names its `invoice_id` and `position`."""
    await update_rows(session, invoice_lines, rows, keys=("invoice_id", "position"))


async def update_invoice(session: AsyncSession, invoice_id: str, **values: Any) -> None:
    await session.execute(update(invoices).where(invoices.c.id == invoice_id).values(**values))


async def update_invoices(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Update invoices by one statement: each row names its `id` and the same columns."""
    await update_rows(session, invoices, rows)


async def insert_payment(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(invoice_payments).values(**values))


async def due_drafts(
    session: AsyncSession,
    now: datetime,
    limit: int,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """Drafts whose grace has ended, oldest first: (tenant_id, id, finalize_at); of live
    customers, or of those on `test_clock_id`."""
    clocked = customers.c.test_clock_id
    statement = (
        select(invoices.c.tenant_id, invoices.c.id, invoices.c.finalize_at)
        .join(customers, customers.c.id == invoices.c.customer_id)
        .where(clocked.is_(None) if test_clock_id is None else clocked == test_clock_id)
        .where(invoices.c.status == "draft", invoices.c.finalize_at <= now)
    )
    if tenant_id is not None:
        statement = statement.where(invoices.c.tenant_id == tenant_id)
    statement = statement.order_by(invoices.c.finalize_at, invoices.c.id).limit(limit)
    return list((await session.execute(statement)).all())


async def next_numbers(
    session: AsyncSession, tenant_id: str, series: str, year: int, count: int = 1
) -> int:
    """Take the tenant's next `count` numbers of `series` in `year`; the last of them.
    The row lock is held until commit, so two finalizations never take one number and a
    rollback gives them back."""
    values = {"tenant_id": tenant_id, "series": series, "year": year, "last": 0}
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(pg_insert(invoice_numbers).values(**values).on_conflict_do_nothing())
    else:
        await session.execute(
            sqlite_insert(invoice_numbers).values(**values).on_conflict_do_nothing()
        )
    statement = (
        update(invoice_numbers)
        .where(
            invoice_numbers.c.tenant_id == tenant_id,
            invoice_numbers.c.series == series,
            invoice_numbers.c.year == year,
        )
        .values(last=invoice_numbers.c.last + count)
        .returning(invoice_numbers.c.last)
    )
    return int((await session.execute(statement)).scalar_one())


async def pending_of(session: AsyncSession, subscription_ids: Sequence[str]) -> list[Record]:
    statement = (
        select(pending_lines)
        .where(pending_lines.c.subscription_id.in_(list(subscription_ids)))
        .order_by(pending_lines.c.created_at, pending_lines.c.id)
    )
    return list((await session.execute(statement)).all())


async def insert_pending(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(pending_lines).values(**values))


async def delete_pending(session: AsyncSession, ids: Sequence[str]) -> None:
    if ids:
        await session.execute(delete(pending_lines).where(pending_lines.c.id.in_(list(ids))))


async def count_of_subscription(session: AsyncSession, subscription_id: str) -> int:
    statement = select(func.count()).where(invoices.c.subscription_id == subscription_id)
    return int((await session.execute(statement)).scalar_one())


async def credit_notes_of(session: AsyncSession, invoice_ids: Sequence[str]) -> list[Record]:
    statement = (
        select(credit_notes)
        .where(credit_notes.c.invoice_id.in_(list(invoice_ids)))
        .order_by(credit_notes.c.created_at, credit_notes.c.number)
    )
    return list((await session.execute(statement)).all())


async def insert_credit_note(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(credit_notes).values(**values))


async def credit_note_by_id(
    session: AsyncSession, tenant_id: str, invoice_id: str, credit_note_id: str
) -> Record | None:
    statement = select(credit_notes).where(
        credit_notes.c.tenant_id == tenant_id,
        credit_notes.c.invoice_id == invoice_id,
        credit_notes.c.id == credit_note_id,
    )
    return (await session.execute(statement)).one_or_none()


async def update_credit_note(session: AsyncSession, credit_note_id: str, **values: Any) -> None:
    statement = update(credit_notes).where(credit_notes.c.id == credit_note_id).values(**values)
    await session.execute(statement)


async def chart_accounts(
    session: AsyncSession, tenant_id: str, codes: Sequence[str]
) -> list[Record]:
    """The tenant's ledger accounts among `codes` (id, code, type, unit, rule), by one
    read: what invoices post to is found for a batch at once (the ledger's service
    finds one code a statement). Creating and moving money stay the ledger's."""
    statement = select(
        ledger_accounts.c.id,
        ledger_accounts.c.code,
        ledger_accounts.c.type,
        ledger_accounts.c.unit,
        ledger_accounts.c.rule,
    ).where(ledger_accounts.c.tenant_id == tenant_id, ledger_accounts.c.code.in_(list(codes)))
    return list((await session.execute(statement)).all())


async def posted_accounts(
    session: AsyncSession, tenant_id: str, transfer_ids: Sequence[str]
) -> dict[str, tuple[str, str]]:
    """The codes of the accounts (debited, credited) of those of `transfer_ids` that are
    on the tenant's ledger, by one read: which book an invoice was posted to, and
    whether its write-off was."""
    debited = ledger_accounts.alias("debited")
    credited = ledger_accounts.alias("credited")
    statement = (
        select(ledger_transfers.c.id, debited.c.code, credited.c.code.label("credit_code"))
        .join(debited, debited.c.id == ledger_transfers.c.debit_account_id)
        .join(credited, credited.c.id == ledger_transfers.c.credit_account_id)
        .where(
            ledger_transfers.c.tenant_id == tenant_id,
            ledger_transfers.c.id.in_(list(transfer_ids)),
        )
    )
    return {row.id: (row.code, row.credit_code) for row in await session.execute(statement)}
