"""All SQL for subscriptions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.tables import plans
from billfold.customers.tables import customers
from billfold.invoicing.tables import invoices
from billfold.kit.db import Record
from billfold.kit.sql import update_rows
from billfold.subscriptions.status import SubscriptionStatus
from billfold.subscriptions.tables import subscriptions


def _with_names() -> Any:
    return (
        select(
            subscriptions,
            customers.c.external_id.label("customer_external_id"),
            plans.c.key.label("plan_key"),
        )
        .join(customers, customers.c.id == subscriptions.c.customer_id)
        .join(plans, plans.c.id == subscriptions.c.plan_id)
    )


async def by_id(
    session: AsyncSession, tenant_id: str, subscription_id: str, *, lock: bool = False
) -> Record | None:
    statement = _with_names().where(
        subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id
    )
    if lock:
        statement = statement.with_for_update(of=subscriptions)
    return (await session.execute(statement)).one_or_none()


async def lock_many(
    session: AsyncSession, tenant_id: str, subscription_ids: Sequence[str]
) -> list[Record]:
    """The tenant's subscriptions of these ids, locked in id order (two batches that
    overlap wait for each other, never deadlock)."""
    statement = (
        _with_names()
        .where(
            subscriptions.c.tenant_id == tenant_id,
            subscriptions.c.id.in_(sorted(set(subscription_ids))),
        )
        .order_by(subscriptions.c.id)
        .with_for_update(of=subscriptions)
    )
    return list((await session.execute(statement)).all())


async def live_of(session: AsyncSession, tenant_id: str, customer_id: str) -> Record | None:
    """The customer's one subscription that is not canceled, if any."""
    statement = _with_names().where(
        subscriptions.c.tenant_id == tenant_id,
        subscriptions.c.customer_id == customer_id,
        subscriptions.c.status != SubscriptionStatus.CANCELED,
    )
    return (await session.execute(statement)).one_or_none()


async def of_customer(session: AsyncSession, tenant_id: str, customer_id: str) -> list[Record]:
    statement = (
        _with_names()
        .where(subscriptions.c.tenant_id == tenant_id, subscriptions.c.customer_id == customer_id)
        .order_by(subscriptions.c.created_at)
    )
    return list((await session.execute(statement)).all())


async def insert_subscription(session: AsyncSession, **values: Any) -> None:
    await session.execute(insert(subscriptions).values(**values))


async def update_subscription(session: AsyncSession, subscription_id: str, **values: Any) -> None:
    await session.execute(
        update(subscriptions).where(subscriptions.c.id == subscription_id).values(**values)
    )


async def update_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Update many subscriptions by one statement: each row names its `id` and the same
    columns."""
    await update_rows(session, subscriptions, rows)


async def due_for_close(
    session: AsyncSession,
    until: datetime,
    limit: int,
    *,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """(tenant_id, id, current_period_ends_at) of the subscriptions whose period has ended
    by `until` and that period close acts on: those billed by invoice, and those billed
    outside with a cancellation scheduled. Earliest first. Only live customers', or only
    those on `test_clock_id`: a test clock's customers follow their clock."""
    statement = (
        select(
            subscriptions.c.tenant_id, subscriptions.c.id, subscriptions.c.current_period_ends_at
        )
        .join(customers, customers.c.id == subscriptions.c.customer_id)
        .where(
            customers.c.test_clock_id.is_(None)
            if test_clock_id is None
            else customers.c.test_clock_id == test_clock_id
        )
    ).where(
        subscriptions.c.current_period_ends_at <= until,
        # Billed by invoice, in any state: a canceled one still has its final invoice to
        # make until its period end is cleared. Billed outside: a scheduled cancellation.
        subscriptions.c.currency.is_not(None)
        | (
            subscriptions.c.cancel_at_period_end
            & (subscriptions.c.status != SubscriptionStatus.CANCELED)
        ),
    )
    if tenant_id is not None:
        statement = statement.where(subscriptions.c.tenant_id == tenant_id)
    statement = statement.order_by(
        subscriptions.c.current_period_ends_at, subscriptions.c.id
    ).limit(limit)
    return list((await session.execute(statement)).all())


async def on_version(
    session: AsyncSession, tenant_id: str, plan_id: str, version_id: str
) -> list[str]:
    """The live subscriptions of a plan still on `version_id` (for a migration)."""
    statement = select(subscriptions.c.id).where(
        subscriptions.c.tenant_id == tenant_id,
        subscriptions.c.plan_id == plan_id,
        subscriptions.c.plan_version_id == version_id,
        subscriptions.c.status != SubscriptionStatus.CANCELED,
    )
    return list((await session.execute(statement)).scalars())


def _clocked(test_clock_id: str | None) -> Any:
    clock = customers.c.test_clock_id
    return clock.is_(None) if test_clock_id is None else clock == test_clock_id


async def overdue(
    session: AsyncSession,
    now: datetime,
    limit: int,
    *,
    past_due_since: datetime,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """(tenant_id, id, status, invoice_id, due_at): billed subscriptions with an open
    invoice due by `now`, their oldest such invoice: those active, and those past due
    whose invoice fell due by `past_due_since`."""
    oldest = (
        select(
            invoices.c.subscription_id,
            func.min(invoices.c.due_at).label("due_at"),
        )
        .where(invoices.c.status == "open", invoices.c.due_at <= now)
        .group_by(invoices.c.subscription_id)
        .subquery()
    )
    statement = (
        select(
            subscriptions.c.tenant_id,
            subscriptions.c.id,
            subscriptions.c.status,
            invoices.c.id.label("invoice_id"),
            oldest.c.due_at,
        )
        .join(oldest, oldest.c.subscription_id == subscriptions.c.id)
        .join(
            invoices,
            (invoices.c.subscription_id == subscriptions.c.id)
            & (invoices.c.due_at == oldest.c.due_at)
            & (invoices.c.status == "open"),
        )
        .join(customers, customers.c.id == subscriptions.c.customer_id)
        .where(
            _clocked(test_clock_id),
            (subscriptions.c.status == SubscriptionStatus.ACTIVE)
            | (
                (subscriptions.c.status == SubscriptionStatus.PAST_DUE)
                & (oldest.c.due_at <= past_due_since)
            ),
        )
    )
    if tenant_id is not None:
        statement = statement.where(subscriptions.c.tenant_id == tenant_id)
    statement = statement.order_by(oldest.c.due_at, subscriptions.c.id).limit(limit)
    return list((await session.execute(statement)).all())


async def recovered(
    session: AsyncSession,
    now: datetime,
    limit: int,
    *,
    tenant_id: str | None = None,
    test_clock_id: str | None = None,
) -> list[Record]:
    """(tenant_id, id) of past due or suspended subscriptions with no open invoice due by
    `now` any more."""
    still_due = (
        select(invoices.c.id)
        .where(
            invoices.c.subscription_id == subscriptions.c.id,
            invoices.c.status == "open",
            invoices.c.due_at <= now,
        )
        .exists()
    )
    statement = (
        select(subscriptions.c.tenant_id, subscriptions.c.id)
        .join(customers, customers.c.id == subscriptions.c.customer_id)
        .where(
            _clocked(test_clock_id),
            subscriptions.c.status.in_([SubscriptionStatus.PAST_DUE, SubscriptionStatus.SUSPENDED]),
            ~still_due,
        )
    )
    if tenant_id is not None:
        statement = statement.where(subscriptions.c.tenant_id == tenant_id)
    return list((await session.execute(statement.limit(limit))).all())
