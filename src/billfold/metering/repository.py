"""All SQL for usage events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    bindparam,
    cast,
    literal,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert
from billfold.metering.tables import quota_accounts, usage_events

_CHUNK = 1_000  # rows per INSERT statement; each row binds 10 parameters


async def insert_new(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert the events whose key the tenant has not used yet; returns the keys inserted.

    The unique (tenant, key) constraint decides, so concurrent retries of one key insert
    it exactly once, whichever transaction commits first."""
    # One statement, compiled once and cached; SQLAlchemy sends the rows in batches
    # ("insertmanyvalues") and gathers what RETURNING answers.
    statement = (
        dialect_insert(session, usage_events)
        .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        .returning(usage_events.c.idempotency_key)
    )
    return set((await session.execute(statement, list(rows))).scalars())


async def ids_by_key(session: AsyncSession, tenant_id: str, keys: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(keys), _CHUNK):
        statement = select(usage_events.c.idempotency_key, usage_events.c.id).where(
            usage_events.c.tenant_id == tenant_id,
            usage_events.c.idempotency_key.in_(keys[start : start + _CHUNK]),
        )
        found.update({row.idempotency_key: row.id for row in await session.execute(statement)})
    return found


def property_text(session: AsyncSession, name: str) -> ColumnElement[str]:
    """One property of the stored JSON, as exact JSON text (`"gpt-4o"`, `0.125`), or NULL."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(type_coerce(usage_events.c.properties, JSONB).op("->")(literal(name)), Text)
    return type_coerce(usage_events.c.properties, Text).op("->")(literal(f'$."{name}"'))


async def events_of(
    session: AsyncSession,
    tenant_id: str,
    customer: str,
    event_types: Sequence[str],
    start: datetime,
    end: datetime,
    properties: Sequence[str],
) -> list[Record]:
    """A customer's events of some types in [start, end): the instant, the type, and the
    named properties as JSON text, labelled p0, p1, ... in the order given."""
    columns = [property_text(session, name).label(f"p{i}") for i, name in enumerate(properties)]
    statement = select(usage_events.c.occurred_at, usage_events.c.type, *columns).where(
        usage_events.c.tenant_id == tenant_id,
        usage_events.c.customer == customer,
        usage_events.c.type.in_(event_types),
        usage_events.c.occurred_at >= start,
        usage_events.c.occurred_at < end,
    )
    return list((await session.execute(statement)).all())


async def lock_accounts(
    session: AsyncSession, tenant_id: str, keys: Sequence[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """Lock the quota accounts of (customer, feature) pairs, creating missing ones, and
    return their state. Locks are taken in key order, so two batches never deadlock."""
    ordered = sorted(set(keys))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        await session.execute(
            dialect_insert(session, quota_accounts).on_conflict_do_nothing(
                index_elements=["tenant_id", "customer", "feature_key"]
            ),
            [
                {
                    "tenant_id": tenant_id,
                    "customer": customer,
                    "feature_key": feature,
                    "state": {},
                    "updated_at": now,
                }
                for customer, feature in chunk
            ],
        )
        statement = (
            select(quota_accounts.c.customer, quota_accounts.c.feature_key, quota_accounts.c.state)
            .where(
                quota_accounts.c.tenant_id == tenant_id,
                tuple_(quota_accounts.c.customer, quota_accounts.c.feature_key).in_(chunk),
            )
            .order_by(quota_accounts.c.customer, quota_accounts.c.feature_key)
            .with_for_update()
        )
        for row in await session.execute(statement):
            found[(row.customer, row.feature_key)] = dict(row.state)
    return found


async def read_account(
    session: AsyncSession, tenant_id: str, customer: str, feature: str
) -> dict[str, Any]:
    statement = select(quota_accounts.c.state).where(
        quota_accounts.c.tenant_id == tenant_id,
        quota_accounts.c.customer == customer,
        quota_accounts.c.feature_key == feature,
    )
    state = (await session.execute(statement)).scalar_one_or_none()
    return dict(state) if state else {}


async def save_accounts(
    session: AsyncSession,
    tenant_id: str,
    states: Mapping[tuple[str, str], dict[str, Any]],
    now: datetime,
) -> None:
    if not states:
        return
    statement = (
        update(quota_accounts)
        .where(
            quota_accounts.c.tenant_id == bindparam("b_tenant"),
            quota_accounts.c.customer == bindparam("b_customer"),
            quota_accounts.c.feature_key == bindparam("b_feature"),
        )
        .values(state=bindparam("b_state"), updated_at=bindparam("b_now"))
    )
    rows = [
        {
            "b_tenant": tenant_id,
            "b_customer": customer,
            "b_feature": feature,
            "b_state": state,
            "b_now": now,
        }
        for (customer, feature), state in sorted(states.items())
    ]
    # One statement for every account: the driver sends the rows as one batch.
    await session.execute(statement, rows)


async def event_by_key(session: AsyncSession, tenant_id: str, key: str) -> Record | None:
    statement = select(usage_events).where(
        usage_events.c.tenant_id == tenant_id, usage_events.c.idempotency_key == key
    )
    return (await session.execute(statement)).first()
