"""Usage read through a meter: exact aggregates of a customer's stored events over a
period, by window and group, and the AI usage report. Reads only."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.meters import Aggregation, Meter
from billfold.customers import service as customers
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.kit.periods import Reset, period
from billfold.metering import ai, repository
from billfold.metering import spans as span_rows
from billfold.metering.aggregation import (
    Accumulator,
    NotANumber,
    Row,
    aggregate,
    json_value,
    matches,
)
from billfold.metering.events import metered_number

MAX_BUCKETS: Final = 2_000


class MeterNotFound(NotFound):
    code = "meter_not_found"
    title = "No such meter"


class MeterValueNotANumber(InvalidInput):
    status = 409
    code = "meter_value_not_a_number"
    title = "A stored event holds a value this meter cannot add"


def _meter(catalog: Catalog, meter_key: str) -> Meter:
    meter = catalog.meters.get(meter_key)
    if meter is None:
        raise MeterNotFound(
            f"no meter {meter_key!r} in the catalog",
            errors=[FieldError("not a meter of the catalog", parameter="meter")],
        )
    return meter


class Window(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    def floor(self, instant: datetime) -> datetime:
        if self is Window.HOUR:
            return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return period(Reset(self.value), instant)[0]  # the calendar's days and months

    def next(self, start: datetime) -> datetime:
        if self is Window.HOUR:
            return start + timedelta(hours=1)
        return period(Reset(self.value), start)[1]


def _reporting_period(
    now: datetime, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    """The [from, to) of a usage report; by default the calendar month that holds `now`."""
    month = Window.MONTH.floor(now)
    start_at = start.astimezone(UTC) if start else month
    end_at = end.astimezone(UTC) if end else Window.MONTH.next(month)
    if end_at <= start_at:
        raise InvalidInput(
            "`to` must be later than `from`", errors=[FieldError("after from", parameter="to")]
        )
    return start_at, end_at


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime
    group: dict[str, Any]
    value: Any
    events: int


@dataclass(frozen=True)
class UsageReport:
    customer: str
    meter: Meter
    start: datetime
    end: datetime
    window: Window | None
    group_by: tuple[str, ...]
    buckets: list[Bucket]


async def report(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter_key: str,
    *,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
    window: Window | None = None,
    group_by: Sequence[str] = (),
) -> UsageReport:
    """A usage report as the API asks for it: over [start, end), by default the calendar
    month that holds `now`."""
    customers.check_external_id(customer)
    start, end = _reporting_period(now, start, end)
    return await usage(
        session,
        catalog,
        tenant_id,
        customer,
        meter_key,
        start,
        end,
        window=window,
        group_by=group_by,
    )


async def usage(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter_key: str,
    start: datetime,
    end: datetime,
    *,
    window: Window | None = None,
    group_by: Sequence[str] = (),
) -> UsageReport:
    """A meter's exact aggregate of one customer's events over [start, end)."""
    meter = _meter(catalog, meter_key)
    for name in group_by:
        if name not in meter.group_by:
            allowed = ", ".join(meter.group_by) or "nothing"
            raise InvalidInput(
                f"meter {meter_key!r} groups by {allowed}, not {name!r}",
                errors=[FieldError(f"one of: {allowed}", parameter="group_by")],
            )
    if window is not None:
        count, cursor = 0, window.floor(start)
        while cursor < end and count <= MAX_BUCKETS:
            cursor, count = window.next(cursor), count + 1
        if count > MAX_BUCKETS:
            raise InvalidInput(
                f"more than {MAX_BUCKETS} {window} windows; ask for a shorter period",
                errors=[FieldError("too many windows", parameter="window")],
            )
    names = tuple(dict.fromkeys([*meter.properties_read(), *group_by]))
    types = [meter.event_type] + ([meter.subtract] if meter.subtract else [])
    records = await repository.events_of(session, tenant_id, customer, types, start, end, names)
    numeric = meter.property if meter.reads_numbers() else None
    rows = (
        Row(
            record[0],
            {name: _read(name, record[i + 2], numeric) for i, name in enumerate(names)},
            negative=record[1] == meter.subtract,
        )
        for record in records
    )
    grouped = dataclasses.replace(meter, group_by=tuple(group_by))
    try:
        buckets = aggregate(grouped, rows, window.floor if window else lambda _instant: start)
    except NotANumber as error:
        raise MeterValueNotANumber(
            f"meter {meter_key!r} ({meter.aggregation} of {meter.property!r}): {error}"
        ) from None
    return UsageReport(
        customer=customer,
        meter=meter,
        start=start,
        end=end,
        window=window,
        group_by=tuple(group_by),
        buckets=_buckets(buckets, grouped, window, start, end),
    )


async def event_count(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter_keys: Sequence[str],
    start: datetime,
    end: datetime,
) -> int:
    """How many stored events the meters read for one customer over [start, end), their
    filters aside: a number that changes whenever a late event lands in the period
    (events are never deleted), so a rating need not be read again when it has not."""
    types = _event_types(catalog, meter_keys)
    if not types:
        return 0
    return await repository.count_events(session, tenant_id, customer, types, start, end)


def _event_types(catalog: Catalog, meter_keys: Sequence[str]) -> list[str]:
    """The event types the catalog's meters among `meter_keys` read, sorted."""
    return sorted(
        {
            kind
            for key in meter_keys
            if key in catalog.meters
            for kind in (catalog.meters[key].event_type, catalog.meters[key].subtract)
            if kind is not None
        }
    )


@dataclass(frozen=True)
class Span:
    customer: str  # the customer's external id, as usage events store it
    start: datetime
    end: datetime  # [start, end)


# Python adds a meter's values as Decimal in the default context, to 28 significant
# digits: a coefficient from this one up is rounded.
_ROUNDED_FROM: Final = 10**28


async def totals(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    meter_key: str,
    spans: Sequence[Span],
) -> list[Decimal]:
    """Each span's total through the meter, in the order given: exactly
    sum(Decimal(b.value or 0) for b in (await usage(session, catalog, tenant_id,
    span.customer, meter_key, span.start, span.end)).buckets), and the same errors
    (MeterNotFound, MeterValueNotANumber) where usage() raises them. An unknown meter is
    refused even when there are no spans.

    On PostgreSQL a count or sum meter is read for many spans in one statement. A span
    whose events hold a value SQL does not add (a decimal string, which usage() reads as
    the number it spells; a boolean, an object), or whose sum Python's 28 digits would
    round, is computed by usage() instead, so its total and its errors are Python's."""
    meter = _meter(catalog, meter_key)
    for span in spans:
        if span.start.tzinfo is None or span.end.tzinfo is None:
            raise ValueError("naive datetimes are not read; pass an aware UTC datetime")
    found: list[Decimal | None] = [None] * len(spans)
    adding = _in_sql(meter) if repository.is_postgres(session) else None
    if adding is not None and spans:
        read = await span_rows.span_sums(
            session,
            tenant_id,
            adding,
            [(span.customer, span.start, span.end) for span in spans],
        )
        found = [_exact(meter, span_sum) for span_sum in read]
    out: list[Decimal] = []
    for span, total in zip(spans, found, strict=True):
        if total is None:
            report = await usage(
                session, catalog, tenant_id, span.customer, meter_key, span.start, span.end
            )
            total = sum((Decimal(b.value or 0) for b in report.buckets), Decimal(0))
        out.append(total)
    return out


def _in_sql(meter: Meter) -> span_rows.Adding | None:
    """How SQL adds the meter up, or None when only Python's aggregation can say."""
    if meter.aggregation not in (Aggregation.COUNT, Aggregation.SUM):
        return None
    if meter.aggregation is Aggregation.SUM and meter.property is None:
        return None
    if not all(_jsonb_candidate(value) for values in meter.filters.values() for value in values):
        return None
    # A sum reads a decimal string in its property as a number (`_read`), so a filter on
    # that property is applied to JSON numbers only, in SQL; anything else there is left
    # to Python.
    own = meter.property if meter.aggregation is Aggregation.SUM else None
    return span_rows.Adding(
        event_types=(meter.event_type, *([meter.subtract] if meter.subtract else [])),
        subtract=meter.subtract,
        property=own,
        filters={
            name: tuple(json.dumps(value) for value in allowed)
            for name, allowed in meter.filters.items()
            if name != own
        },
        own=(
            tuple(json.dumps(value) for value in meter.filters[own])
            if own is not None and own in meter.filters
            else None
        ),
    )


def _jsonb_candidate(value: Any) -> bool:
    """Whether jsonb equality with `value` is `aggregation._same`: text, integers and
    booleans are, unless the text holds what jsonb cannot (NUL, a lone surrogate), which
    no stored value holds either."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    return isinstance(value, int)  # bool included


def _exact(meter: Meter, read: span_rows.SpanSum) -> Decimal | None:
    """The span's total as usage() computes it, or None when only usage() can say."""
    if meter.aggregation is Aggregation.COUNT:
        return Decimal(int(read.total))
    total = read.total
    if total.is_nan():
        return None  # a value SQL does not add
    # usage() adds in Python's context, which keeps 28 significant digits. Each partial
    # sum is below `events` times 10**digits, at the scale of the most precise value (the
    # exact total's scale): under 10**28 at that scale, no digit is rounded away, and the
    # exact total is Python's.
    exponent = total.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if read.events * 10 ** ((read.digits or 0) + max(0, -exponent)) >= _ROUNDED_FROM:
        return None
    return Decimal(total) if total else Decimal(0)


async def event_counts(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    meter_keys: Sequence[str],
    spans: Sequence[Span],
) -> list[int]:
    """event_count(...) for each span, in the order given, in one query per chunk of
    spans."""
    types = _event_types(catalog, meter_keys)
    if not types or not spans:
        return [0] * len(spans)
    return await span_rows.count_events_of_spans(
        session, tenant_id, types, [(span.customer, span.start, span.end) for span in spans]
    )


async def amounts(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    meter_key: str,
    start: datetime,
    end: datetime,
) -> list[Decimal]:
    """Each amount a sum meter reads from one customer's events over [start, end), in
    the order they occurred: what a `percentage` price charges a share of. An event of
    the meter's `subtract` type counts as a negative amount."""
    meter = catalog.meters.get(meter_key)
    if meter is None or meter.property is None:
        raise MeterNotFound(f"no sum meter {meter_key!r} in the catalog")
    names = tuple(dict.fromkeys([*meter.properties_read()]))
    types = [meter.event_type] + ([meter.subtract] if meter.subtract else [])
    records = await repository.events_of(session, tenant_id, customer, types, start, end, names)
    rows = sorted(
        (
            Row(
                record[0],
                {n: _read(n, record[i + 2], meter.property) for i, n in enumerate(names)},
                negative=record[1] == meter.subtract,
            )
            for record in records
        ),
        key=lambda row: row.occurred_at,
    )
    found = []
    for row in rows:
        if not matches(meter, row):
            continue
        value = row.properties.get(meter.property)
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise MeterValueNotANumber(
                f"meter {meter_key!r} reads {meter.property!r}, and an event holds {value!r}"
            )
        found.append(-Decimal(value) if row.negative else Decimal(value))
    return found


def _read(name: str, text: str | None, numeric: str | None) -> Any:
    """One stored property as the meter reads it: the property a sum or max reads takes a
    decimal string ("12.5") as the number it spells (docs/decisions/0023)."""
    value = json_value(text)
    if name == numeric and type(value) is str:
        number = metered_number(value)
        if number is not None:
            return number
    return value


def _buckets(
    found: dict[tuple[Any, tuple[Any, ...]], Accumulator],
    meter: Meter,
    window: Window | None,
    start: datetime,
    end: datetime,
) -> list[Bucket]:
    out = [
        Bucket(
            start=bucket_start,
            end=(window.next(bucket_start) if window else end),
            group=dict(zip(meter.group_by, group, strict=True)),
            value=accumulator.result(),
            events=accumulator.count,
        )
        for (bucket_start, group), accumulator in found.items()
    ]
    out.sort(key=lambda b: (b.start, [str(v) for v in b.group.values()]))
    if not out and not meter.group_by and window is None:
        empty = Accumulator(meter.aggregation)
        out.append(Bucket(start, end, {}, empty.result(), 0))
    return out


# What the AI usage report reads of each `ai.tokens` event.
_AI_PROPERTIES = (
    "model",
    "workflow",
    "prompt_tokens",
    "completion_tokens",
    "tokens",
    "duration_ms",
)


@dataclass(frozen=True)
class AiUsage:
    customer: str
    start: datetime
    end: datetime
    currency: str
    report: ai.AiReport


async def ai_usage(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    customer: str,
    *,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> AiUsage:
    """Tokens and estimated cost per workflow and per model over [start, end) (by default
    this calendar month), priced by the plans file's `ai.models` table."""
    customers.check_external_id(customer)
    start, end = _reporting_period(now, start, end)
    records = await repository.events_of(
        session, tenant_id, customer, [catalog.ai.event], start, end, _AI_PROPERTIES
    )
    rows = (
        (record[0], {name: json_value(record[i + 2]) for i, name in enumerate(_AI_PROPERTIES)})
        for record in records
    )
    return AiUsage(customer, start, end, catalog.ai.currency, ai.report(catalog.ai, rows))
