"""Usage in, aggregates out. Takes a session and a context; never commits."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, Literal, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput, NotFound
from billfold.kit.ids import new_sorted_ids
from billfold.metering import quota, quotas, repository
from billfold.metering.events import Rejection, UsageEvent
from billfold.metering.model import Accumulator, Meter, NotANumber, Row, aggregate, json_value
from billfold.metering.quota import Reset

MAX_BUCKETS: Final = 2_000

Status = Literal["accepted", "duplicate", "rejected"]


class MeterNotFound(NotFound):
    code = "meter_not_found"
    title = "No such meter"


class MeterValueNotANumber(InvalidInput):
    status = 409
    code = "meter_value_not_a_number"
    title = "A stored event holds a value this meter cannot add"


class Outcome(NamedTuple):
    """One event's fate, as `/v1/events` answers it (OutcomeOut's fields, in order)."""

    index: int  # type: ignore[assignment]  # the answer names it so; shadows tuple.index
    status: Status
    idempotency_key: str | None
    id: str | None = None
    code: str | None = None
    reason: str | None = None


async def ingest(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    items: Sequence[UsageEvent | Rejection],
    *,
    late_window: timedelta,
) -> tuple[list[Outcome], dict[str, Decimal]]:
    """Append the events whose idempotency key is new, draw them from the quotas their
    meters feed, and report each item's fate (and the overage per metered feature).

    Usage events are their own append-only record, so they are not copied into the
    event log one by one; a quota overage is."""
    outcomes, firsts = triage(items)
    ids = iter(new_sorted_ids("use", len(firsts), ctx.now))
    rows: list[dict[str, Any]] = [
        {
            "id": next(ids),
            "tenant_id": ctx.tenant_id,
            "idempotency_key": item.idempotency_key,
            "customer": item.customer,
            "type": item.type,
            "service": item.service,
            "correlation_id": item.correlation_id,
            "occurred_at": item.timestamp or ctx.now,
            "received_at": ctx.now,
            "properties": item.properties,
        }
        for item in firsts.values()
    ]
    texts = [item.properties_json or json.dumps(item.properties) for item in firsts.values()]
    inserted = await repository.insert_new(session, rows, texts) if rows else set()
    fresh = [row for row in rows if row["idempotency_key"] in inserted]
    stored = {row["idempotency_key"]: row["id"] for row in fresh}
    earlier = [row["idempotency_key"] for row in rows if row["idempotency_key"] not in inserted]
    if earlier:
        stored.update(await repository.ids_by_key(session, ctx.tenant_id, earlier))
    settled = [_settle(outcome, inserted, stored) for outcome in outcomes]
    # Last: drawing locks the customers' quota accounts until the caller commits, and
    # every other batch of these customers waits for those locks.
    overages = await quotas.draw_reported(session, ctx, catalog, fresh, late_window=late_window)
    return settled, overages


def _settle(outcome: Outcome, inserted: set[str], ids: dict[str, str]) -> Outcome:
    """An outcome once the store has answered: a key it already held is a duplicate."""
    key = outcome.idempotency_key
    if outcome.status == "rejected" or key is None:
        return outcome
    status: Status = "accepted" if outcome.status == "accepted" and key in inserted else "duplicate"
    return Outcome(outcome.index, status, key, ids.get(key))


def triage(
    items: Sequence[UsageEvent | Rejection],
) -> tuple[list[Outcome], dict[str, UsageEvent]]:
    """Each item's fate before any store is asked: rejected, a repeat of a key earlier in
    the same batch (duplicate), or to be stored (accepted, unless the store has the key
    already). Returns the outcomes and the events to store, by key."""
    outcomes: list[Outcome] = []
    firsts: dict[str, UsageEvent] = {}
    for index, item in enumerate(items):
        if isinstance(item, Rejection):
            outcomes.append(
                Outcome(index, "rejected", item.idempotency_key, code=item.code, reason=item.reason)
            )
        elif item.idempotency_key in firsts:
            outcomes.append(Outcome(index, "duplicate", item.idempotency_key))
        else:
            firsts[item.idempotency_key] = item
            outcomes.append(Outcome(index, "accepted", item.idempotency_key))
    return outcomes, firsts


class Window(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"

    def floor(self, instant: datetime) -> datetime:
        if self is Window.HOUR:
            return instant.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return quota.period(Reset(self.value), instant)[0]  # the calendar's days and months

    def next(self, start: datetime) -> datetime:
        if self is Window.HOUR:
            return start + timedelta(hours=1)
        return quota.period(Reset(self.value), start)[1]


def reporting_period(
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
    meter = catalog.meters.get(meter_key)
    if meter is None:
        raise MeterNotFound(
            f"no meter {meter_key!r} in the catalog",
            errors=[FieldError("not a meter of the catalog", parameter="meter")],
        )
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
    rows = (
        Row(
            record[0],
            {name: json_value(record[i + 2]) for i, name in enumerate(names)},
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
