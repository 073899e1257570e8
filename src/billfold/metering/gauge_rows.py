"""The rows of the gauges kept current (`metering/gauges.py`): their definitions, each
customer's value, and the tenant's gauge lock. Apart from `repository`, which holds the
usage events and quota accounts."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import (
    and_,
    bindparam,
    delete,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.metering.repository import CHUNK, is_postgres
from billfold.metering.tables import gauge_meters, gauge_values

# Gauges kept current (metering/gauges.py). Every ingest holds the tenant's gauge lock shared
# from reading the definitions to its commit; a check that computes a customer's first value
# holds it exclusively. So an ingest either commits before that computation reads the events
# (and is in it), or adds its events to the value the computation stored. SQLite runs one
# write transaction at a time, which is as much.
_GAUGE_LOCK_SHARED = """
SELECT g.meter_key, g.definition::text
FROM (SELECT pg_advisory_xact_lock_shared(hashtextextended($2, 0))) AS l
LEFT JOIN gauge_meters AS g ON g.tenant_id = $1
"""


def _gauge_lock_name(tenant_id: str) -> str:
    return f"billfold.gauges/{tenant_id}"


async def gauge_definitions_locked(
    session: AsyncSession, tenant_id: str
) -> dict[str, dict[str, Any]]:
    """The tenant's kept gauges (meter key -> definition), taking its gauge lock shared."""
    if is_postgres(session):
        connection = await session.connection()
        result: Any = await connection.exec_driver_sql(
            _GAUGE_LOCK_SHARED, (tenant_id, _gauge_lock_name(tenant_id))
        )
        return {row[0]: json.loads(row[1]) for row in result if row[0] is not None}
    statement = select(gauge_meters.c.meter_key, gauge_meters.c.definition).where(
        gauge_meters.c.tenant_id == tenant_id
    )
    return {row[0]: dict(row[1]) for row in await session.execute(statement)}


async def lock_gauges_exclusively(session: AsyncSession, tenant_id: str) -> None:
    if is_postgres(session):
        connection = await session.connection()
        await connection.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", (_gauge_lock_name(tenant_id),)
        )


async def gauge_of(
    session: AsyncSession, tenant_id: str, meter_key: str, customer: str
) -> tuple[dict[str, Any], int, bool, str | None] | None:
    """A kept gauge's (definition, catalog revision, whether the customer has a value, the
    value), or None when the meter is not kept. One statement, so one snapshot."""
    values = gauge_values.c
    statement = (
        select(
            gauge_meters.c.definition,
            gauge_meters.c.catalog_revision,
            values.customer,
            values.value,
        )
        .select_from(
            gauge_meters.outerjoin(
                gauge_values,
                and_(
                    values.tenant_id == gauge_meters.c.tenant_id,
                    values.meter_key == gauge_meters.c.meter_key,
                    values.customer == customer,
                ),
            )
        )
        .where(gauge_meters.c.tenant_id == tenant_id, gauge_meters.c.meter_key == meter_key)
    )
    row = (await session.execute(statement)).one_or_none()
    if row is None:
        return None
    return dict(row[0]), int(row[1]), row[2] is not None, row[3]


async def keep_gauge(
    session: AsyncSession,
    tenant_id: str,
    meter_key: str,
    definition: Mapping[str, Any],
    revision: int,
) -> None:
    """Keep `meter_key` under `definition` from now on, forgetting the values kept under
    another. The caller holds the gauge lock exclusively."""
    await session.execute(
        delete(gauge_values).where(
            gauge_values.c.tenant_id == tenant_id, gauge_values.c.meter_key == meter_key
        )
    )
    await session.execute(
        delete(gauge_meters).where(
            gauge_meters.c.tenant_id == tenant_id, gauge_meters.c.meter_key == meter_key
        )
    )
    await session.execute(
        insert(gauge_meters).values(
            tenant_id=tenant_id,
            meter_key=meter_key,
            definition=dict(definition),
            catalog_revision=revision,
        )
    )


async def store_gauge_value(
    session: AsyncSession, tenant_id: str, meter_key: str, customer: str, value: str | None
) -> None:
    """A customer's first kept value. The caller holds the gauge lock exclusively."""
    await session.execute(
        insert(gauge_values).values(
            tenant_id=tenant_id, meter_key=meter_key, customer=customer, value=value
        )
    )


async def add_to_gauges(
    session: AsyncSession,
    tenant_id: str,
    add: Callable[[str | None, Any], str | None],
    deltas: Mapping[tuple[str, str], Any],
) -> None:
    """Add each (meter key, customer)'s delta to its kept value, where the customer has one:
    `add(stored, delta)` is the new value. Rows are locked in key order (byte order), so two
    ingests never deadlock on them."""
    ordered = sorted(deltas)
    values = gauge_values.c
    found: dict[tuple[str, str], str | None] = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        statement = select(values.meter_key, values.customer, values.value).where(
            values.tenant_id == tenant_id,
            tuple_(values.meter_key, values.customer).in_(chunk),
        )
        if is_postgres(session):
            statement = statement.order_by(
                values.meter_key.collate("C"), values.customer.collate("C")
            ).with_for_update()
        for row in await session.execute(statement):
            found[(row[0], row[1])] = row[2]
    if not found:
        return
    write = (
        update(gauge_values)
        .where(
            values.tenant_id == bindparam("b_tenant"),
            values.meter_key == bindparam("b_meter"),
            values.customer == bindparam("b_customer"),
        )
        .values(value=bindparam("b_value"))
    )
    rows = [
        {
            "b_tenant": tenant_id,
            "b_meter": meter,
            "b_customer": customer,
            "b_value": add(stored, deltas[(meter, customer)]),
        }
        for (meter, customer), stored in sorted(found.items())
    ]
    await session.execute(write, rows)
