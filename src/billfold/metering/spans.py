"""All SQL that reads many customers' usage over their own periods at once: the batch
reads of period close (`usage.totals`, `usage.event_counts`). A `count` or `sum` meter
is added up in SQL on PostgreSQL (decision 0038); event counts on both backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    Integer,
    String,
    column,
    func,
    select,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import UTCDateTime
from billfold.metering.repository import is_postgres
from billfold.metering.tables import usage_events

SPANS_PER_QUERY: Final = 10_000  # spans one statement reads at most
# From this many customers in one statement, the tenant's events over their periods are
# read in one pass instead of each span's through the index. A pass reads every event of
# the tenant over the periods, whoever's, so it pays only for a large share of the
# customers: on 10,000 customers of 100 events each, stored in time order, a pass took
# 0.45 to 0.75 s, the lookups 0.26 ms a span (1.3 s at 5,000).
SCAN_FROM: Final = 5_000


@dataclass(frozen=True)
class Adding:
    """What a `count` or `sum` meter adds up, as the SQL of `span_sums` decides it.

    Every filter but `own` is matched with jsonb equality, which is the meter's own
    equality (`aggregation._same`) for text, integer and boolean candidates; `own`, the
    filter on the summed property itself, is applied to JSON numbers only."""

    event_types: tuple[str, ...]
    subtract: str | None  # events of this type count negatively
    property: str | None  # the property a sum adds; None counts events
    filters: Mapping[str, tuple[str, ...]]  # property -> candidates as JSON text
    own: tuple[str, ...] | None = None  # candidates on `property` as JSON text


@dataclass(frozen=True)
class SpanSum:
    """One span as `span_sums` read it. `total` is exact, and NaN when an event the meter
    matches holds a value that is neither a JSON number nor null (SQL does not guess what
    a string, a boolean or an object means); `events` counts the span's events of the
    types; every value read is below 10**`digits` (None for a count, or no value)."""

    total: Decimal
    events: int
    digits: int | None


class _Parameters:
    """Numbered parameters ($1, $2, ...) of a statement built from parts."""

    def __init__(self, *first: Any) -> None:
        self.values: list[Any] = list(first)

    def add(self, value: Any, sql_type: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{sql_type}"


def _filtered(*conditions: str) -> str:
    kept = [condition for condition in conditions if condition]
    return f" FILTER (WHERE {' AND '.join(kept)})" if kept else ""


def _aggregates(adding: Adding, parameters: _Parameters, in_span: str) -> str:
    """The total, the event count and the integer digits of the events `in_span`."""
    subtract = parameters.add(adding.subtract, "text") if adding.subtract else None
    plus = f"e.type <> {subtract}" if subtract else ""
    minus = f"e.type = {subtract}" if subtract else ""
    if adding.property is None:
        total = f"count(*){_filtered(in_span, plus)}"
        if subtract:
            total += f" - count(*){_filtered(in_span, minus)}"
        return f"{total} AS total, count(*){_filtered(in_span)} AS events, NULL AS digits"
    name = parameters.add(adding.property, "text")
    value = f"(e.properties -> {name})"
    number = f"{value}::numeric"
    if adding.own is not None:
        number = (
            f"CASE WHEN {value} = ANY({parameters.add(list(adding.own), 'text[]')}::jsonb[])"
            f" THEN {number} END"
        )
    # One CASE, so that the common row (a number) costs one type test; anything but a
    # number or null turns the span's sum into NaN.
    read = (
        f"CASE coalesce(jsonb_typeof({value}), 'null') WHEN 'number' THEN {number}"
        " WHEN 'null' THEN NULL ELSE 'NaN'::numeric END"
    )
    total = f"coalesce(sum({read}){_filtered(in_span, plus)}, 0)"
    if subtract:
        total += f" - coalesce(sum({read}){_filtered(in_span, minus)}, 0)"
    # The most characters before a value's point, its sign included: each value is below
    # 10**digits.
    digits = f"max(octet_length(split_part(e.properties ->> {name}, '.', 1))){_filtered(in_span)}"
    return f"{total} AS total, count(*){_filtered(in_span)} AS events, {digits} AS digits"


def _property_filters(adding: Adding, parameters: _Parameters) -> str:
    return "".join(
        f"\n      AND (e.properties -> {parameters.add(name, 'text')})"
        f" = ANY({parameters.add(list(candidates), 'text[]')}::jsonb[])"
        for name, candidates in sorted(adding.filters.items())
    )


# Each span's events through the index, one lookup a span: what a batch of a few hundred
# customers costs least with. The aggregate inside the lateral subquery leaves the planner
# no other plan to choose, whatever it guesses of the arrays' lengths.
_LOOKUP = """
SELECT s.i, x.total, x.events, x.digits
FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY
     AS s(customer, start_at, end_at, i)
CROSS JOIN LATERAL (
    SELECT {aggregates}
    FROM usage_events AS e
    WHERE e.tenant_id = $1 AND e.customer = s.customer AND e.type = ANY($5::text[])
      AND e.occurred_at >= s.start_at AND e.occurred_at < s.end_at{filters}
) AS x
"""

# The tenant's events over one period, added up by customer in one pass: the shape of a
# plain GROUP BY, for many customers who share the period (a calendar month). The spans are
# matched to their customers' rows in Python, so no join is left to the planner.
_PERIOD = """
SELECT e.customer, {aggregates}
FROM usage_events AS e
WHERE e.tenant_id = $1 AND e.type = ANY($2::text[])
  AND e.occurred_at >= $3::timestamptz AND e.occurred_at < $4::timestamptz{filters}
GROUP BY e.customer
"""

# The tenant's events over the spans' periods in one pass, each looked up in a hash of the
# spans by customer (one span a customer): many customers with periods of their own. The
# events are the preserved side of a left join, so the planner cannot make it an index
# lookup a span; grouping the spans tells it their customers are distinct, so it hashes
# the spans, not the events.
_HASHED_SPANS = """
SELECT s.i, {aggregates}
FROM usage_events AS e
LEFT JOIN (
    SELECT customer, min(start_at) AS start_at, min(end_at) AS end_at, min(i) AS i
    FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY
         AS s(customer, start_at, end_at, i)
    GROUP BY customer
) AS s ON s.customer = e.customer AND e.occurred_at >= s.start_at AND e.occurred_at < s.end_at
WHERE e.tenant_id = $1 AND e.type = ANY($5::text[])
  AND e.occurred_at >= {low} AND e.occurred_at < {high}{filters}
GROUP BY s.i
"""

Spans = Sequence[tuple[str, datetime, datetime]]


async def span_sums(
    session: AsyncSession, tenant_id: str, adding: Adding, spans: Spans
) -> list[SpanSum]:
    """Each (customer, start, end) span's events as `adding` adds them, in the order given.
    PostgreSQL only. A chunk of spans is read in one statement, through the index, unless
    it holds SCAN_FROM customers or more: then in one pass over the tenant's events per
    period they share, or else per repeat of a customer."""
    found: list[SpanSum] = [SpanSum(Decimal(0), 0, None)] * len(spans)
    for first in range(0, len(spans), SPANS_PER_QUERY):
        chunk = range(first, min(first + SPANS_PER_QUERY, len(spans)))
        periods: dict[tuple[datetime, datetime], list[int]] = {}
        for position in chunk:
            periods.setdefault((spans[position][1], spans[position][2]), []).append(position)
        rest: list[int] = []
        for period, positions in periods.items():
            if len({spans[position][0] for position in positions}) >= SCAN_FROM:
                await _read_period(session, tenant_id, adding, spans, positions, period, found)
            else:
                rest.extend(positions)
        rest.sort()
        lookups: list[int] = []
        for part in _rounds([spans[position][0] for position in rest]):
            if len(part) >= SCAN_FROM:
                await _read_pass(session, tenant_id, adding, spans, [rest[i] for i in part], found)
            else:
                lookups.extend(rest[i] for i in part)
        if lookups:
            await _read_lookups(session, tenant_id, adding, spans, sorted(lookups), found)
    return found


def _rounds(customers: Sequence[str]) -> list[list[int]]:
    """Positions split so that no part repeats a customer: a customer's k-th span is in
    part k."""
    seen: dict[str, int] = {}
    parts: list[list[int]] = []
    for position, customer in enumerate(customers):
        repeat = seen.get(customer, 0)
        seen[customer] = repeat + 1
        if repeat == len(parts):
            parts.append([])
        parts[repeat].append(position)
    return parts


def _span_arrays(tenant_id: str, spans: Spans, positions: Sequence[int]) -> _Parameters:
    """$1 the tenant, $2 to $4 the spans' customers, starts and ends."""
    chosen = [spans[position] for position in positions]
    return _Parameters(
        tenant_id,
        [customer for customer, _start, _end in chosen],
        [start for _customer, start, _end in chosen],
        [end for _customer, _start, end in chosen],
    )


async def _execute(session: AsyncSession, sql: str, parameters: _Parameters) -> list[Any]:
    connection = await session.connection()
    result: Any = await connection.exec_driver_sql(sql, tuple(parameters.values))
    return list(result.all())


def _span_sum(row: Any) -> SpanSum:
    return SpanSum(Decimal(row[1]), int(row[2]), row[3])


async def _read_lookups(
    session: AsyncSession,
    tenant_id: str,
    adding: Adding,
    spans: Spans,
    positions: Sequence[int],
    found: list[SpanSum],
) -> None:
    parameters = _span_arrays(tenant_id, spans, positions)
    parameters.add(list(dict.fromkeys(adding.event_types)), "text[]")
    aggregates = _aggregates(adding, parameters, "")
    sql = _LOOKUP.format(aggregates=aggregates, filters=_property_filters(adding, parameters))
    for row in await _execute(session, sql, parameters):
        found[positions[row[0] - 1]] = _span_sum(row)


async def _read_pass(
    session: AsyncSession,
    tenant_id: str,
    adding: Adding,
    spans: Spans,
    positions: Sequence[int],
    found: list[SpanSum],
) -> None:
    parameters = _span_arrays(tenant_id, spans, positions)
    parameters.add(list(dict.fromkeys(adding.event_types)), "text[]")
    low = parameters.add(min(spans[position][1] for position in positions), "timestamptz")
    high = parameters.add(max(spans[position][2] for position in positions), "timestamptz")
    aggregates = _aggregates(adding, parameters, "s.i IS NOT NULL")
    sql = _HASHED_SPANS.format(
        aggregates=aggregates, low=low, high=high, filters=_property_filters(adding, parameters)
    )
    for row in await _execute(session, sql, parameters):
        if row[0] is not None:  # None: the events of no span
            found[positions[row[0] - 1]] = _span_sum(row)


async def _read_period(
    session: AsyncSession,
    tenant_id: str,
    adding: Adding,
    spans: Spans,
    positions: Sequence[int],
    period: tuple[datetime, datetime],
    found: list[SpanSum],
) -> None:
    parameters = _Parameters(tenant_id, list(dict.fromkeys(adding.event_types)), *period)
    aggregates = _aggregates(adding, parameters, "")
    sql = _PERIOD.format(aggregates=aggregates, filters=_property_filters(adding, parameters))
    by_customer = {row[0]: _span_sum(row) for row in await _execute(session, sql, parameters)}
    for position in positions:
        read = by_customer.get(spans[position][0])
        if read is not None:
            found[position] = read


# Each span's events counted through the index (an index-only scan once the table is
# vacuumed), the lateral subquery leaving the planner no other plan.
_COUNT_SPANS = """
SELECT s.i, x.events
FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY
     AS s(customer, start_at, end_at, i)
CROSS JOIN LATERAL (
    SELECT count(*) AS events
    FROM usage_events AS e
    WHERE e.tenant_id = $1 AND e.customer = s.customer AND e.type = ANY($5::text[])
      AND e.occurred_at >= s.start_at AND e.occurred_at < s.end_at
) AS x
"""
# On SQLite the spans are a VALUES list, bound parameter by parameter (4 a span) and
# compiled each time: 1,000 spans took 70 to 140 ms, against 0.9 s a span at a time.
SQLITE_SPANS_PER_QUERY: Final = 1_000


async def count_events_of_spans(
    session: AsyncSession, tenant_id: str, event_types: Sequence[str], spans: Spans
) -> list[int]:
    """`count_events` of each (customer, start, end) span, in the order given: one
    statement per chunk of spans."""
    found: list[int] = []
    if is_postgres(session):
        for first in range(0, len(spans), SPANS_PER_QUERY):
            positions = range(first, min(first + SPANS_PER_QUERY, len(spans)))
            parameters = _span_arrays(tenant_id, spans, positions)
            parameters.add(list(event_types), "text[]")
            rows = await _execute(session, _COUNT_SPANS, parameters)
            counts = {row[0]: int(row[1]) for row in rows}  # by ordinality, from 1
            found.extend(counts[i + 1] for i in range(len(positions)))
        return found
    events = usage_events.c
    for first in range(0, len(spans), SQLITE_SPANS_PER_QUERY):
        chunk = spans[first : first + SQLITE_SPANS_PER_QUERY]
        given = (
            values(
                column("i", Integer),
                column("customer", String),
                column("start_at", UTCDateTime()),
                column("end_at", UTCDateTime()),
                name="spans",
            )
            .data([(i, *span) for i, span in enumerate(chunk)])
            .cte()
        )
        counted = (
            select(func.count())
            .where(
                events.tenant_id == tenant_id,
                events.customer == given.c.customer,
                events.type.in_(list(event_types)),
                events.occurred_at >= given.c.start_at,
                events.occurred_at < given.c.end_at,
            )
            .scalar_subquery()
        )
        counts = {row[0]: int(row[1]) for row in await session.execute(select(given.c.i, counted))}
        found.extend(counts[i] for i in range(len(chunk)))
    return found
