"""Totals of many spans at once: each span's total is what usage() sums for it, digit for
digit, with usage()'s errors, on both backends; event counts are event_count's."""

from __future__ import annotations

import random
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Text, bindparam, cast, insert
from sqlalchemy.dialects.postgresql import JSONB

from billfold.catalog import catalog as catalog_reader
from billfold.catalog.catalog import Catalog
from billfold.kit.db import UTCDateTime
from billfold.metering import spans as spans_sql
from billfold.metering import usage
from billfold.metering.tables import usage_events
from billfold.metering.usage import MeterNotFound, MeterValueNotANumber, Span
from tests.conftest import Harness, new_harness, postgresql_only

pytestmark = pytest.mark.anyio

PLANS = """
version: 1
meters:
  storage:
    event: disk.used
    subtract: disk.freed
    aggregation: sum
    property: gb
    allow_negative: true
    filters: {kind: {in: [team, solo]}, tier: {equals: 1}, beta: {equals: true}}
  spaces:
    event: space.created
    subtract: space.deleted
    aggregation: count
    filters: {kind: {in: [team, solo]}, tier: {equals: 1}, beta: {equals: true}}
  sized:
    event: disk.used
    aggregation: sum
    property: gb
    filters: {gb: {in: [1, 2, 5]}, kind: {equals: team}}
  tokens:
    event: ai.tokens
    aggregation: sum
    property: tokens
  peak:
    event: disk.used
    aggregation: max
    property: gb
features:
  storage.max: {type: limit, meter: storage}
plans:
  free:
    name: Free
    default: true
    features: {storage.max: 100}
"""
METERS = ("storage", "spaces", "sized", "tokens", "peak")
TYPES = ("disk.used", "disk.freed", "space.created", "space.deleted", "ai.tokens", "other")

# Property values as JSON text; None leaves the property out.
NUMBERS = (
    "3",
    "-2",
    "0",
    "1",
    "2",
    "5",
    "1.0",
    "2.50",
    "-7.25",
    "1e3",
    "1.5E-7",
    "0.1234567890123456789",
    "98765432109876.54321",
    "12345678901234567890123456789",  # 29 digits: Python's context rounds sums of it
    "9999999999999.999999999999999",
    "null",
    None,
)
DECIMAL_STRINGS = ('"12.5"', '"-3"', '"1"', '"1e2"')  # numbers to usage(); not to SQL
NOT_NUMBERS = ('"abc"', "true", "[]", "[1]", '{"n": 1}')  # usage() refuses them if read
KINDS = ('"team"', '"team"', '"solo"', '"other"', "1", "true", None)
TIERS = ("1", "1", "1.0", "1e0", "2", '"1"', "true", None)
BETAS = ("true", "true", "true", "false", "1", '"true"', None)


@pytest.fixture
async def metered(backend: str, database_url: str) -> AsyncIterator[Harness]:
    built = await new_harness(database_url, plans=PLANS)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


async def catalog_of(harness: Harness) -> Catalog:
    async with harness.database.transaction(write=False) as session:
        return await catalog_reader.current(session, harness.tenant_id)


async def store(harness: Harness, events: Sequence[tuple[str, str, datetime, str]]) -> None:
    """Events (customer, type, instant, properties as JSON text), stored as written: past
    ingest's checks, as events stored before them may be."""
    raw = bindparam("b_properties", type_=Text)
    statement = insert(usage_events).values(
        id=bindparam("b_id"),
        tenant_id=harness.tenant_id,
        idempotency_key=bindparam("b_id"),
        customer=bindparam("b_customer"),
        type=bindparam("b_type"),
        occurred_at=bindparam("b_at", type_=UTCDateTime()),
        received_at=bindparam("b_at", type_=UTCDateTime()),
        properties=cast(raw, JSONB) if harness.backend == "postgresql" else raw,
    )
    prefix = secrets.token_hex(6)  # ids are unique across tenants
    rows = [
        {
            "b_id": f"use_{prefix}_{index:07d}",
            "b_customer": customer,
            "b_type": kind,
            "b_at": at,
            "b_properties": properties,
        }
        for index, (customer, kind, at, properties) in enumerate(events)
    ]
    async with harness.database.transaction() as session:
        await session.execute(statement, rows)


def document(**values: str | None) -> str:
    return "{" + ", ".join(f'"{k}": {v}' for k, v in values.items() if v is not None) + "}"


def random_events(
    rng: random.Random, customers: Sequence[str], count: int, start: datetime, days: int
) -> list[tuple[str, str, datetime, str]]:
    """`count` events of random types, instants and properties. Decimal strings only for
    the first customer, so that most spans are decided in SQL; values no meter can add
    only where the meters that would read them filter them out."""
    made = []
    for _ in range(count):
        customer = rng.choice(customers)
        kind = rng.choice(TYPES)
        number = rng.choice(NUMBERS)
        if customer == customers[0] and rng.random() < 0.3:
            number = rng.choice(DECIMAL_STRINGS)
        properties = {
            "kind": rng.choice(KINDS),
            "tier": rng.choice(TIERS),
            "beta": rng.choice(BETAS),
            "gb": number,
            "tokens": rng.choice(NUMBERS),
        }
        if kind == "other":  # no meter reads it
            properties["tokens"] = properties["gb"] = rng.choice(NOT_NUMBERS)
        elif kind.startswith("disk.") and rng.random() < 0.1:
            # Read by no meter: `storage` and `sized` filter it out by kind, `peak` reads
            # disk.used only.
            properties |= {"kind": '"other"', "gb": rng.choice(NOT_NUMBERS)}
            kind = "disk.freed"
        instant = start + timedelta(seconds=rng.randrange(days * 86_400))
        made.append((customer, kind, instant, document(**properties)))
    return made


def random_spans(
    rng: random.Random, customers: Sequence[str], count: int, start: datetime, days: int
) -> list[Span]:
    spans = []
    for _ in range(count):
        begin = start + timedelta(hours=rng.randrange(-12, days * 24))
        length = rng.choice([timedelta(0), timedelta(hours=-3), timedelta(hours=1)])
        if rng.random() < 0.8:
            length = timedelta(hours=rng.randrange(1, days * 24))
        spans.append(Span(rng.choice([*customers, "nobody"]), begin, begin + length))
    return spans


async def per_span(harness: Harness, meter: str, spans: Sequence[Span]) -> list[Decimal]:
    """What usage() sums for each span, one call a span."""
    catalog = await catalog_of(harness)
    found = []
    async with harness.database.transaction(write=False) as session:
        for span in spans:
            report = await usage.usage(
                session, catalog, harness.tenant_id, span.customer, meter, span.start, span.end
            )
            found.append(sum(Decimal(b.value or 0) for b in report.buckets))
    return found


async def totals(harness: Harness, meter: str, spans: Sequence[Span]) -> list[Decimal]:
    catalog = await catalog_of(harness)
    async with harness.database.transaction(write=False) as session:
        return await usage.totals(session, catalog, harness.tenant_id, meter, spans)


def digits(values: Sequence[Decimal]) -> list[str]:
    """Values as written, so that 2.50 and 2.5 differ."""
    return [str(value) for value in values]


async def test_each_span_totals_what_usage_sums_for_it(metered: Harness) -> None:
    rng = random.Random(20260601)
    start = metered.clock.now() - timedelta(days=6)
    customers = [f"c{n:02d}" for n in range(25)]
    await store(metered, random_events(rng, customers, 1_500, start, days=6))
    spans = random_spans(rng, customers, 150, start, days=6)
    spans += spans[:10]  # the same spans again
    for meter in METERS:
        expected = await per_span(metered, meter, spans)
        assert digits(await totals(metered, meter, spans)) == digits(expected), meter
    assert await totals(metered, "storage", []) == []


async def test_a_value_usage_cannot_add_is_refused_as_usage_refuses_it(
    metered: Harness,
) -> None:
    at = metered.clock.now() - timedelta(hours=1)
    await store(
        metered,
        [
            ("ada", "ai.tokens", at, '{"tokens": 10}'),
            ("bo", "ai.tokens", at, '{"tokens": 5}'),
            ("bo", "ai.tokens", at, '{"tokens": "12.5"}'),  # a number
        ],
    )
    day = Span("ada", at - timedelta(days=1), at + timedelta(days=1))
    bo = Span("bo", day.start, day.end)
    assert await totals(metered, "tokens", [day, bo]) == [10, Decimal("17.5")]
    for value in ('"abc"', "true", '{"n": 1}'):
        await store(metered, [("ada", "ai.tokens", at, f'{{"tokens": {value}}}')])
        with pytest.raises(MeterValueNotANumber) as refused:
            await per_span(metered, "tokens", [day])
        with pytest.raises(MeterValueNotANumber) as also:
            await totals(metered, "tokens", [bo, day])
        assert str(also.value) == str(refused.value)
    # Outside the spans the value is not read.
    assert await totals(metered, "tokens", [bo, Span("ada", day.end, day.end)]) == [
        Decimal("17.5"),
        0,
    ]
    with pytest.raises(MeterNotFound):
        await totals(metered, "nothing", [day])


async def test_event_counts_are_event_count_of_each_span(metered: Harness) -> None:
    rng = random.Random(7)
    start = metered.clock.now() - timedelta(days=3)
    customers = [f"c{n:02d}" for n in range(10)]
    await store(metered, random_events(rng, customers, 400, start, days=3))
    spans = random_spans(rng, customers, 60, start, days=3)
    catalog = await catalog_of(metered)
    counted: dict[tuple[str, ...], list[int]] = {}
    for keys in (["storage", "spaces"], ["tokens"], ["peak", "nothing"], ["nothing"], []):
        async with metered.database.transaction(write=False) as session:
            expected = [
                await usage.event_count(
                    session, catalog, metered.tenant_id, span.customer, keys, span.start, span.end
                )
                for span in spans
            ]
            counted[tuple(keys)] = await usage.event_counts(
                session, catalog, metered.tenant_id, keys, spans
            )
        assert counted[tuple(keys)] == expected, keys
    assert sum(counted[("storage", "spaces")]) > 0
    assert counted[("nothing",)] == counted[()] == [0] * len(spans)
    # More spans than one statement takes.
    async with metered.database.transaction(write=False) as session:
        many = await usage.event_counts(session, catalog, metered.tenant_id, ["tokens"], spans * 20)
    assert many == counted[("tokens",)] * 20


# PostgreSQL reads up to SPANS_PER_QUERY spans a statement; SQLite reads span by span.
@postgresql_only
async def test_spans_beyond_one_statement_are_totalled_in_order(metered: Harness) -> None:
    rng = random.Random(5)
    start = metered.clock.now() - timedelta(days=2)
    customers = [f"c{n:02d}" for n in range(20)]
    await store(metered, random_events(rng, customers, 300, start, days=2))
    spans = random_spans(rng, customers, 100, start, days=2)
    repeats = spans_sql.SPANS_PER_QUERY // len(spans) + 2
    for meter in ("storage", "spaces"):
        once = await totals(metered, meter, spans)
        assert digits(await totals(metered, meter, spans * repeats)) == digits(once * repeats)


# One pass over the tenant's events is taken only from SCAN_FROM customers a statement,
# and only on PostgreSQL; below it, each span is read through the index, which the test
# above holds to usage().
@postgresql_only
async def test_one_pass_over_many_customers_totals_what_lookups_total(metered: Harness) -> None:
    rng = random.Random(11)
    start = metered.clock.now() - timedelta(days=2)
    customers = [f"m{n:05d}" for n in range(spans_sql.SCAN_FROM + 300)]
    await store(metered, random_events(rng, customers, 3 * len(customers), start, days=2))
    shuffled = rng.sample(customers[1:], len(customers) - 1)
    # Every customer but one, each over a period of its own, some twice...
    own = random_spans(rng, customers, len(shuffled), start, days=2)
    apart = [Span(c, span.start, span.end) for c, span in zip(shuffled, own, strict=True)]
    apart += random_spans(rng, customers, 300, start, days=2)
    # ...and all over one period, some twice, with a few periods of their own.
    day = (start + timedelta(hours=6), start + timedelta(hours=30))
    shared = [Span(customer, *day) for customer in [*shuffled, *shuffled[:100], "nobody"]]
    shared += random_spans(rng, customers, 100, start, days=2)
    for spans in (apart, shared):
        assert len({span.customer for span in spans}) >= spans_sql.SCAN_FROM
        half = len(spans) // 2
        for meter in ("storage", "spaces", "sized", "tokens"):
            looked_up = await totals(metered, meter, spans[:half])
            looked_up += await totals(metered, meter, spans[half:])
            assert digits(await totals(metered, meter, spans)) == digits(looked_up), meter
