"""Gauges kept current: the value of a meter that feeds a limit (`spaces.max` with
`meter: spaces`), per customer, updated as events are stored instead of aggregated from
every stored event on every check (docs/decisions/0030).

A limit's meter adds up (plansfile: count or sum, maybe with `subtract`), so an event's
part of the value does not depend on the order events arrive in: the kept value is the
stored one plus what each new event adds, computed by the read-time aggregation's own
`Accumulator`. A customer's first value is that aggregation itself, over all of its
events, computed under the tenant's gauge lock (see `gauge_rows.gauge_definitions_locked`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import FeatureType
from billfold.catalog.meters import Meter
from billfold.kit.db import Database, UnitOfWork
from billfold.kit.periods import BEGINNING, NEVER
from billfold.metering import gauge_rows, usage
from billfold.metering.aggregation import Accumulator, NotANumber, Row, matches

_UNADDABLE: Final = object()  # a delta holding a value the meter cannot add


def _add(stored: str | None, delta: Any) -> str | None:
    if stored is None or delta is _UNADDABLE:
        return None
    return str(Decimal(stored) + delta)


def _delta(meter: Meter, events: Sequence[tuple[dict[str, Any], str]]) -> Any:
    """What `events` (each a stored row and its properties as JSON text) add to the meter."""
    accumulator = Accumulator(meter.aggregation)
    names = meter.properties_read()
    for row, text in events:
        properties = json.loads(text, parse_float=Decimal, parse_int=Decimal)
        seen = {name: properties.get(name) for name in names}
        event = Row(row["occurred_at"], seen, negative=row["type"] == meter.subtract)
        if not matches(meter, event):
            continue
        value = seen.get(meter.property) if meter.property else None
        try:
            accumulator.add(event.occurred_at, value, event.negative)
        except NotANumber:
            return _UNADDABLE
    return accumulator.result()


async def keep(
    session: AsyncSession,
    tenant_id: str,
    rows: Sequence[dict[str, Any]],
    texts: Sequence[str],
    inserted: set[str],
) -> None:
    """Add the events just stored (`rows` whose key is in `inserted`; `texts[i]` is row i's
    properties as stored) to the kept gauges, in the caller's transaction."""
    if not inserted:
        return  # nothing new: no gauge moves
    definitions = await gauge_rows.gauge_definitions_locked(session, tenant_id)
    if not definitions:
        return
    meters = [Meter.from_json(key, definition) for key, definition in definitions.items()]
    by_type: dict[str, list[Meter]] = {}
    for meter in meters:
        for kind in {meter.event_type, meter.subtract} - {None}:
            by_type.setdefault(str(kind), []).append(meter)
    grouped: dict[tuple[str, str], list[tuple[dict[str, Any], str]]] = {}
    for row, text in zip(rows, texts, strict=True):
        if row["idempotency_key"] not in inserted:
            continue
        for meter in by_type.get(row["type"], ()):
            grouped.setdefault((meter.key, row["customer"]), []).append((row, text))
    if not grouped:
        return
    by_key = {meter.key: meter for meter in meters}
    deltas = {key: _delta(by_key[key[0]], events) for key, events in grouped.items()}
    await gauge_rows.add_to_gauges(session, tenant_id, _add, deltas)


def kept(catalog: Catalog, meter: Meter) -> bool:
    """Whether `meter` is kept current: it adds up, and no quota's consume writes the events
    it reads (consume stores its events apart from ingest, which keeps gauges)."""
    if not meter.aggregation.adds:
        return False
    types = {meter.event_type, meter.subtract}
    for feature in catalog.features.values():
        drawn = catalog.meters.get(feature.config.get("meter", ""))
        if feature.type is FeatureType.METERED and drawn is not None and drawn.event_type in types:
            return False
    return True


async def current(
    unit: UnitOfWork,
    database: Database | None,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter_key: str,
) -> Decimal:
    """The meter's value for the customer over all of its events: the kept value when there
    is one; the first time, the read-time aggregation, stored to be kept from then on (in a
    write transaction of its own: the unit, which only reads, is released first, so that a
    check never holds two connections)."""
    meter = catalog.meters.get(meter_key)
    if database is None or meter is None or not kept(catalog, meter):
        return await _aggregate(unit.session, catalog, tenant_id, customer, meter_key)
    found = await gauge_rows.gauge_of(unit.session, tenant_id, meter_key, customer)
    if found is not None:
        definition, revision, has_value, value = found
        if revision == catalog.revision and definition == meter.as_json():
            if has_value and value is not None:
                return Decimal(value)
            if has_value:  # an event the meter cannot add: the aggregation says so
                return await _aggregate(unit.session, catalog, tenant_id, customer, meter_key)
        elif revision > catalog.revision:  # a newer catalog keeps it; ours is stale
            return await _aggregate(unit.session, catalog, tenant_id, customer, meter_key)
    await unit.release()
    async with database.transaction() as writing:
        first = await _first_value(writing, catalog, tenant_id, customer, meter)
    if first is _UNADDABLE:
        return await _aggregate(unit.session, catalog, tenant_id, customer, meter_key)
    return Decimal(first)


async def _first_value(
    session: AsyncSession, catalog: Catalog, tenant_id: str, customer: str, meter: Meter
) -> Any:
    """Under the gauge lock: keep the meter under this catalog revision (unless a newer one
    keeps it already), and store the customer's value, from every event stored."""
    await gauge_rows.lock_gauges_exclusively(session, tenant_id)
    found = await gauge_rows.gauge_of(session, tenant_id, meter.key, customer)
    definition = meter.as_json()
    if found is None or found[1] != catalog.revision or found[0] != definition:
        if found is not None and found[1] > catalog.revision:
            return await _aggregate(session, catalog, tenant_id, customer, meter.key)
        # Kept from this catalog revision on: values kept under an earlier one are
        # forgotten, so nothing that catalog let pass unkept (a quota's consume of the
        # meter's events, say) lingers in them.
        await gauge_rows.keep_gauge(session, tenant_id, meter.key, definition, catalog.revision)
    elif found[2]:  # another check stored it meanwhile
        return _UNADDABLE if found[3] is None else Decimal(found[3])
    try:
        value: Decimal | None = await _aggregate(session, catalog, tenant_id, customer, meter.key)
    except usage.MeterValueNotANumber:
        value = None
    await gauge_rows.store_gauge_value(
        session, tenant_id, meter.key, customer, None if value is None else str(value)
    )
    return _UNADDABLE if value is None else value


async def _aggregate(
    session: AsyncSession, catalog: Catalog, tenant_id: str, customer: str, meter_key: str
) -> Decimal:
    """The read-time aggregation of the customer's events through the meter, all time."""
    report = await usage.usage(session, catalog, tenant_id, customer, meter_key, BEGINNING, NEVER)
    value = report.buckets[0].value if report.buckets else Decimal(0)
    return Decimal(value)
