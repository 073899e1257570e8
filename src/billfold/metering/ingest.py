"""Usage in: a body of events checked one by one, stored exactly once per idempotency
key and drawn from the quotas their meters feed, or queued on the NATS stream for
`billfold worker ingest`. Takes a session and a context; never commits."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.meters import Aggregation
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError
from billfold.kit.ids import new_sorted_ids
from billfold.metering import events, gauges, repository
from billfold.metering.events import Rejection, UsageEvent
from billfold.metering.quotas.reported import draw_reported

log = logging.getLogger("billfold.metering")

Status = Literal["accepted", "duplicate", "rejected"]

KEY_REUSED = "idempotency_key_reused"
_REUSED_REASON = (
    "this idempotency key was first used for an event with another body; "
    "a retry must send the same event, and a new event needs a new key"
)


class EventsRejected(BillfoldError):
    status = 422
    code = "events_rejected"
    title = "No event was accepted"


@dataclass(frozen=True)
class IngestWindows:
    """How old (`late`), and how far ahead of the clock (`skew`), an event's time may be."""

    late: timedelta
    skew: timedelta


class Publisher(Protocol):
    """Where checked events go instead of the store, with `BILLFOLD_INGEST` (the stream)."""

    async def publish(self, ctx: Context, events: Sequence[UsageEvent]) -> None: ...


async def accept(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    items: list[Any],
    media_type: str,
    *,
    windows: IngestWindows,
    publisher: Publisher | None,
) -> tuple[dict[str, Any], dict[str, Decimal]]:
    """Check each item as a usage event, store (or queue) the good ones, and answer for
    each: an `IngestOut` as plain data (a batch holds up to 10,000 results), with the
    overage per metered feature that stored events drew. Raises `EventsRejected`, with
    every result, when not one was good."""
    rules = metered_rules(catalog)
    checked = [
        metered(events.check(item, media_type, ctx.now, windows.late, windows.skew), rules)
        for item in items
    ]
    overages: dict[str, Decimal] = {}
    if publisher is not None:
        outcomes, firsts = triage(checked)
        if firsts:
            await publisher.publish(ctx, list(firsts.values()))
    else:
        outcomes, overages = await ingest(session, ctx, catalog, checked, late_window=windows.late)
    results = [outcome._asdict() for outcome in outcomes]  # OutcomeOut's fields
    counts = Counter(outcome.status for outcome in outcomes)
    if counts["rejected"] == len(outcomes):
        raise EventsRejected(
            f"every event was rejected; the first: {outcomes[0].reason}",
            extra={"results": results},
        )
    answer = {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "queued": publisher is not None,
        "results": results,
    }
    return answer, overages


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
    reused: set[str] = set()
    # A key stored already: a retry if the stored event says the same, else refused.
    # Compared here, off the hot path, rather than by a digest taken of every event.
    for row in await repository.events_in_full(session, ctx.tenant_id, earlier):
        stored[row.idempotency_key] = row.id
        if not _same_as_stored(firsts[row.idempotency_key], row):
            reused.add(row.idempotency_key)
    settled = [_settle(outcome, inserted, stored, reused) for outcome in outcomes]
    await gauges.keep(session, ctx.tenant_id, rows, texts, inserted)  # gauges kept current
    refused = [o.idempotency_key for o in settled if o.code == KEY_REUSED]
    if refused:
        # Counted nowhere else when the stream's worker stores the events: say so here.
        log.warning(
            "usage events refused, idempotency key reused with another body: tenant %s, "
            "%d events, the first %r",
            ctx.tenant_id,
            len(refused),
            refused[0],
        )
    # Last: drawing locks the customers' quota accounts until the caller commits, and
    # every other batch of these customers waits for those locks.
    overages = await draw_reported(session, ctx, catalog, fresh, late_window=late_window)
    return settled, overages


def _same_as_stored(event: UsageEvent, row: Any) -> bool:
    # An event stored without a timestamp has the instant it was received.
    said = None if row.occurred_at == row.received_at else row.occurred_at
    if event.timestamp is not None and event.timestamp == row.occurred_at:
        said = event.timestamp  # sent with the very instant it was received at
    return events.same_event(event, row.customer, row.type, row.service, said, row.properties)


def _settle(outcome: Outcome, inserted: set[str], ids: dict[str, str], reused: set[str]) -> Outcome:
    """An outcome once the store has answered: a key it already held is a duplicate, or a
    refusal when it held the key for another body."""
    key = outcome.idempotency_key
    if outcome.status == "rejected" or key is None:
        return outcome
    if key in reused:
        return Outcome(outcome.index, "rejected", key, code=KEY_REUSED, reason=_REUSED_REASON)
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
        elif (first := firsts.get(item.idempotency_key)) is not None:
            if events.same_event(
                item, first.customer, first.type, first.service, first.timestamp, first.properties
            ):
                outcomes.append(Outcome(index, "duplicate", item.idempotency_key))
            else:
                outcomes.append(
                    Outcome(
                        index,
                        "rejected",
                        item.idempotency_key,
                        code=KEY_REUSED,
                        reason=_REUSED_REASON,
                    )
                )
        else:
            firsts[item.idempotency_key] = item
            outcomes.append(Outcome(index, "accepted", item.idempotency_key))
    return outcomes, firsts


# event type -> (property, meter key, whether it may be negative), for the sum and max
# meters that read the type (as their event or as the events they subtract).
MeteredRules = dict[str, list[tuple[str, str, bool]]]


def metered_rules(catalog: Catalog) -> MeteredRules:
    rules: MeteredRules = {}
    for meter in catalog.meters.values():
        if not meter.reads_numbers() or meter.property is None:
            continue
        negative = meter.aggregation is not Aggregation.SUM or meter.allow_negative
        for kind in (meter.event_type, meter.subtract):
            if kind is not None:
                rules.setdefault(kind, []).append((meter.property, meter.key, negative))
    return rules


def metered(item: UsageEvent | Rejection, rules: MeteredRules) -> UsageEvent | Rejection:
    """The event, or its refusal when a property that a sum or max meter reads is not a
    number (`events.metered_number`), or is negative for a sum meter that does not allow
    it (docs/decisions/0023). An absent property is fine: it adds nothing."""
    if isinstance(item, Rejection):
        return item
    found = rules.get(item.type)
    if found is None:
        return item
    properties = item.properties
    for name, meter_key, negative in found:
        if name not in properties:
            continue
        raw = properties[name]
        # The usual JSON number needs no conversion: the check refused NaN and Infinity.
        kind = type(raw)
        value = raw if kind is int or kind is float else events.metered_number(raw)
        if value is None:
            reason = f"properties.{name}: meter {meter_key!r} reads it: {events.NUMBER_RULE}"
            return Rejection(item.idempotency_key, "invalid_event", reason)
        if value < 0 and not negative:
            reason = (
                f"properties.{name}: meter {meter_key!r} takes no negative values "
                "(a plans file can set allow_negative: true on a sum meter)"
            )
            return Rejection(item.idempotency_key, "invalid_event", reason)
    return item
