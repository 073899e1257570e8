"""Period close: when a billed subscription's period ends, rate the period's usage,
renew (or end) the subscription, and make its draft invoice; when a draft's grace ends,
rate its usage again (late events land on it) and finalize it.

One subscription, or one draft, per transaction, each under its row lock: a run that
is killed loses only the one in hand, and a second run (or a second worker) finds the
period already closed. The unique (subscription, period) constraint on invoices is the
backstop.

An invoice made at a period end T holds:
- the usage of [S, T), per usage price, rated through the meters (billed in arrears);
- the minimum commitment's true-up for [S, T);
- the changes' pending prorations and credits;
- the recurring fee of the next period [T, T') (billed in advance), unless the
  subscription ends or is paused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.prices import PlanPrice
from billfold.invoicing import issuing as invoicing
from billfold.invoicing import pending
from billfold.invoicing.records import Charge, Invoicing, Numbering
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.metering import usage
from billfold.money import minor_units, to_minor
from billfold.pricing import rate
from billfold.subscriptions import charges, lifecycle
from billfold.subscriptions import repository as subscription_rows
from billfold.subscriptions.cycle import Cycle
from billfold.subscriptions.service import price_of
from billfold.subscriptions.status import SubscriptionStatus as S

RERATED = ("usage", "minimum")


@dataclass(frozen=True)
class CloseSettings:
    grace: timedelta = timedelta(hours=1)  # a draft waits this long for late usage
    numbering: Numbering = field(default_factory=Numbering)
    invoicing: Invoicing = field(default_factory=Invoicing)  # seller, locale, taxes
    # Past due this long, a subscription is suspended and its entitlements stop.
    suspend_after: timedelta = timedelta(days=14)


@dataclass(frozen=True)
class Closed:
    subscription_id: str
    invoice_id: str | None
    status: S
    finalized: bool = False  # in the same transaction: the grace had ended by `until`


async def close_subscription(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    until: datetime,
    settings: CloseSettings,
) -> Closed | None:
    """Close the subscription's current period if it ended by `until`; None if there is
    nothing to close (another run did it, or it is not due)."""
    closed = await close_many(session, ctx, catalog, [subscription_id], until, settings)
    return closed[0] if closed else None


async def close_many(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_ids: Sequence[str],
    until: datetime,
    settings: CloseSettings,
) -> list[Closed]:
    """Close the current period of each of one tenant's subscriptions that ended by
    `until`, together, under their row locks: their usage is read, their invoices
    inserted and their rows moved by a few statements for the whole batch. What is not
    due (another run closed it) is left out of the result."""
    closed: list[Closed] = []
    entries: list[eventlog.Entry] = []
    updates: list[dict[str, Any]] = []
    billed: list[Record] = []
    for row in await subscription_rows.lock_many(session, ctx.tenant_id, subscription_ids):
        end = row.current_period_ends_at
        if end is None or end > until or (S(row.status) is S.CANCELED and row.currency is None):
            continue
        if row.currency is not None:
            billed.append(row)
        elif row.cancel_at_period_end:  # billed outside: only a scheduled cancellation
            updates.append(_moved(row, ctx, status=S.CANCELED, canceled_at=end, ends_at=end))
            entries.append(_cancelled(ctx, row, row.plan_key, end))
            closed.append(Closed(row.id, None, S.CANCELED))
    ratings = [_rating(catalog, row) for row in billed]
    rated = [(rating, row) for rating, row in zip(ratings, billed, strict=True) if rating]
    usage_lines = iter(
        await arrears_many(
            session,
            catalog,
            ctx.tenant_id,
            [
                (rating, row.current_period_start, row.current_period_ends_at)
                for rating, row in rated
            ],
        )
    )
    late = [
        (rating, row.current_period_start, row.current_period_ends_at)
        for rating, row in rated
        if row.current_period_ends_at + settings.grace > until
    ]
    for (waiting, _start, _end), events in zip(
        late, await _events_many(session, catalog, ctx.tenant_id, late), strict=True
    ):
        waiting["events"] = events  # what finalization compares to see whether usage came late
    taken = await pending.take_many(session, [row.id for row in billed])
    news: list[invoicing.NewInvoice] = []
    renewals: list[_Renewal] = []
    for row, rating in zip(billed, ratings, strict=True):
        status, start, end = S(row.status), row.current_period_start, row.current_period_ends_at
        lines = [*(next(usage_lines) if rating else []), *taken.get(row.id, [])]
        ends = status is S.CANCELED or row.cancel_at_period_end
        next_end: datetime | None = None
        next_status = S.CANCELED if ends else S.ACTIVE if status is S.TRIALING else status
        if not ends:
            row = await lifecycle.apply_scheduled(session, ctx, catalog, row)
            next_end, advance = advance_of(
                row, catalog.versions[row.plan_version_id], row.quantity, end
            )
            if advance is not None and next_status is not S.PAUSED:
                lines.append(advance)
        version = catalog.versions[row.plan_version_id]
        off = charges.discount(row.discount, lines)
        if off is not None:
            lines.append(off)
        lines += _carried_credit(lines, row.currency, keep=not ends)
        for line in lines:
            if line.kind == "carried":
                await pending.add(session, ctx, row.id, _carried_forward(line))
        updates.append(
            _moved(
                row,
                ctx,
                status=next_status,
                current_period_start=end if next_end else start,
                current_period_ends_at=next_end,
                canceled_at=row.canceled_at or (end if ends else None),
                ends_at=row.ends_at or (end if ends else None),
                cancel_at_period_end=False if ends else row.cancel_at_period_end,
                discount=charges.after_use(row.discount) if off is not None else row.discount,
            )
        )
        made = None
        if lines:
            made = len(news)
            news.append(
                invoicing.NewInvoice(
                    customer_id=row.customer_id,
                    subscription_id=row.id,
                    currency=row.currency,
                    reason="subscription_end" if ends else "subscription_cycle",
                    period_start=start,
                    period_end=end,
                    charges=lines,
                    finalize_at=end + settings.grace,
                    rating=rating,
                    # The usage was just read and nothing can land on the draft any more:
                    # it is finalized at once.
                    finalize=end + settings.grace <= until,
                )
            )
        renewals.append(_Renewal(row, version, next_end, status, ends, made))
        closed.append(Closed(row.id, None, next_status))
    invoice_ids = await invoicing.create_many(
        session, ctx, news, settings.numbering, settings.invoicing
    )
    await subscription_rows.update_many(session, updates)
    done = {item.subscription_id: item for item in closed}
    for renewal in renewals:
        made = renewal.invoice
        invoice_id = invoice_ids[made] if made is not None else None
        finalized = made is not None and news[made].finalize
        row_id = renewal.row.id
        done[row_id] = Closed(row_id, invoice_id, done[row_id].status, finalized)
        entry = _renewal(ctx, renewal, invoice_id)
        if entry is not None:
            entries.append(entry)
    await eventlog.record_many(session, entries)
    return list(done.values())


def _moved(row: Record, ctx: Context, **values: Any) -> dict[str, Any]:
    """A subscription row's update, every column period close moves named (one statement
    updates a batch of them)."""
    return {
        "id": row.id,
        "status": row.status,
        "current_period_start": row.current_period_start,
        "current_period_ends_at": row.current_period_ends_at,
        "canceled_at": row.canceled_at,
        "ends_at": row.ends_at,
        "cancel_at_period_end": row.cancel_at_period_end,
        "discount": row.discount,
        "updated_at": ctx.now,
        **values,
    }


def _cancelled(ctx: Context, row: Record, plan: str, end: datetime) -> eventlog.Entry:
    data = {
        "subscription_id": row.id,
        "plan": plan,
        "ends_at": end.isoformat(),
        "at_period_end": True,
    }
    return eventlog.Entry(ctx, "SubscriptionCancelled", data, row.customer_id)


class _Renewal(NamedTuple):
    """A closed period, for its event-log entry once its invoice has an id."""

    row: Record  # as it was closed (its period not moved yet)
    version: PlanVersion  # the plan version it goes on with
    next_end: datetime | None
    status: S  # before the close
    ends: bool
    invoice: int | None  # its invoice's place in the batch


def _renewal(ctx: Context, renewal: _Renewal, invoice_id: str | None) -> eventlog.Entry | None:
    """The entry a closed period writes: renewed, trial ended or cancelled at its end;
    none for the final invoice of a subscription canceled before."""
    row, version, next_end, status, ends, _made = renewal
    end = row.current_period_ends_at
    if ends and status is S.CANCELED:
        return None
    if ends:
        entry = _cancelled(ctx, row, version.plan_key, end)
        return entry._replace(data={**entry.data, "invoice_id": invoice_id})
    event: eventlog.EventType = (
        "SubscriptionTrialEnded" if status is S.TRIALING else "SubscriptionRenewed"
    )
    data = {
        "subscription_id": row.id,
        "plan": version.plan_key,
        "invoice_id": invoice_id,
        "period_start": end.isoformat(),
        "period_ends_at": _iso(next_end),
    }
    return eventlog.Entry(ctx, event, data, row.customer_id)


def _carried_forward(line: Charge) -> Charge:
    return Charge(
        kind="credit",
        description="Credit carried from the previous invoice",
        quantity=Decimal(1),
        amount_precise=-line.amount_precise,
    )


def _rating(catalog: Catalog, row: Record) -> dict[str, Any] | None:
    version = catalog.versions[row.plan_version_id]
    price = price_of(version, row.currency, row.interval)
    return rating_of(row, version, price, row.current_period_start, row.current_period_ends_at)


async def arrears(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    rating: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> list[Charge]:
    """What a period [start, end) owes in arrears (see `arrears_many`)."""
    (found,) = await arrears_many(session, catalog, tenant_id, [(rating, start, end)])
    return found


async def arrears_many(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    periods: Sequence[tuple[Mapping[str, Any], datetime, datetime]],
) -> list[list[Charge]]:
    """What each period [start, end) owes in arrears: each usage price rated on its
    meter's usage, and the minimum commitment's true-up over the period's recurring fee
    and usage. The usage of all periods is read per meter, together."""
    used: list[dict[str, tuple[Decimal, Decimal]]] = [{} for _ in periods]
    by_meter: dict[str, list[int]] = {}
    for i, (rating, start, end) in enumerate(periods):
        for meter_key, meter_price in _price(catalog, rating).usage.items():
            if meter_key not in catalog.meters:
                continue  # archived since: its usage is no longer read
            if meter_price["model"] == "percentage":
                events = await usage.amounts(
                    session, catalog, tenant_id, rating["customer"], meter_key, start, end
                )
                used[i][meter_key] = (sum(events, Decimal(0)), rate(meter_price, events))
            else:
                by_meter.setdefault(meter_key, []).append(i)
    for meter_key, items in by_meter.items():
        spans = [usage.Span(periods[i][0]["customer"], *periods[i][1:]) for i in items]
        quantities = await usage.totals(session, catalog, tenant_id, meter_key, spans)
        for i, quantity in zip(items, quantities, strict=True):
            meter_price = _price(catalog, periods[i][0]).usage[meter_key]
            used[i][meter_key] = (quantity, rate(meter_price, quantity))
    return [
        _arrears_of(catalog, rating, start, end, found)
        for (rating, start, end), found in zip(periods, used, strict=True)
    ]


def _arrears_of(
    catalog: Catalog,
    rating: Mapping[str, Any],
    start: datetime,
    end: datetime,
    used: Mapping[str, tuple[Decimal, Decimal]],
) -> list[Charge]:
    """A period's arrears lines, from the (quantity, amount) of each usage price."""
    version = catalog.versions[rating["plan_version_id"]]
    price = _price(catalog, rating)
    found: list[Charge] = []
    for meter_key, (quantity, amount) in sorted(used.items()):
        if quantity == 0 and amount == 0:
            continue
        meter = catalog.meters[meter_key]
        found.append(
            Charge(
                kind="usage",
                description=f"{version.name}: {meter.description or meter_key}",
                quantity=quantity,
                amount_precise=amount,
                price=price.usage[meter_key],
                meter=meter_key,
                period_start=start,
                period_end=end,
            )
        )
    if price.minimum is not None and rating["recurring"] is not None:
        committed = Decimal(rating["recurring"]) + sum(
            (amount for _quantity, amount in used.values()), Decimal(0)
        )
        if committed < price.minimum:
            found.append(
                Charge(
                    kind="minimum",
                    description=f"{version.name}: minimum commitment of {price.minimum}",
                    quantity=Decimal(1),
                    amount_precise=price.minimum - committed,
                    price={"model": "flat", "amount": str(price.minimum)},
                    period_start=start,
                    period_end=end,
                )
            )
    return found


def _price(catalog: Catalog, rating: Mapping[str, Any]) -> PlanPrice:
    version = catalog.versions[rating["plan_version_id"]]
    return price_of(version, rating["currency"], rating["interval"])


async def finalize_draft(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    invoice_id: str,
    settings: CloseSettings,
) -> str | None:
    """Finalize one draft (see `finalize_drafts`); None when it is no longer a draft."""
    done = await finalize_drafts(session, ctx, catalog, [invoice_id], settings)
    return done[0] if done else None


async def finalize_drafts(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    invoice_ids: Sequence[str],
    settings: CloseSettings,
) -> list[str]:
    """Rate the drafts' usage again where events arrived late (they land on the draft),
    then finalize them together; the ids finalized (those no longer drafts are left
    out)."""
    drafts = await invoicing.drafts_to_finalize(session, ctx.tenant_id, invoice_ids)
    rated = [
        (draft, (draft.rating, draft.period_start, draft.period_end))
        for draft in drafts
        if draft.rating and draft.rating["plan_version_id"] in catalog.versions
    ]
    counts = await _events_many(session, catalog, ctx.tenant_id, [period for _d, period in rated])
    # Events are never deleted: the same count means no late event, nothing to re-rate.
    late = [
        (draft, period)
        for (draft, period), events in zip(rated, counts, strict=True)
        if period[0].get("events") != events
    ]
    fresh = await arrears_many(session, catalog, ctx.tenant_id, [period for _d, period in late])
    for (draft, _period), lines in zip(late, fresh, strict=True):
        await invoicing.replace_charges(session, ctx, draft.id, RERATED, lines)
    done = [draft.id for draft in drafts]
    await invoicing.finalize_many(session, ctx, done, settings.numbering, settings.invoicing)
    return done


async def _events_many(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    periods: Sequence[tuple[Mapping[str, Any], datetime, datetime]],
) -> list[int]:
    """How many events each rated period's meters read (`usage.event_counts`): the
    number finalization compares to see whether usage came late."""
    counts: list[int] = [0] * len(periods)
    by_meters: dict[tuple[str, ...], list[int]] = {}
    for i, (rating, _start, _end) in enumerate(periods):
        by_meters.setdefault(tuple(sorted(_price(catalog, rating).usage)), []).append(i)
    for meters, items in by_meters.items():
        spans = [usage.Span(periods[i][0]["customer"], *periods[i][1:]) for i in items]
        found = await usage.event_counts(session, catalog, tenant_id, meters, spans)
        for i, count in zip(items, found, strict=True):
            counts[i] = count
    return counts


def rating_of(
    row: Record, version: PlanVersion, price: PlanPrice, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """How a period's arrears are rated (`arrears`), or None when it has none: a trial
    bills nothing, and a paused or canceled period bills its usage but no minimum."""
    if S(row.status) is S.TRIALING or not (price.usage or price.minimum is not None):
        return None
    committed = S(row.status) in (S.ACTIVE, S.PAST_DUE)
    recurring = recurring_for(version, price, row, start, end) if committed else None
    return {
        "plan_version_id": version.id,
        "currency": row.currency,
        "interval": row.interval,
        "customer": row.customer_external_id,
        "recurring": str(recurring) if recurring is not None else None,
    }


def advance_of(
    row: Record, version: PlanVersion, quantity: Decimal, end: datetime
) -> tuple[datetime, Charge | None]:
    """The period that starts at `end`, and its recurring fee billed in advance."""
    period = Cycle(row.billing_anchor, row.interval, row.interval_count).period_of(end)
    price = price_of(version, row.currency, row.interval)
    return period[1], charges.recurring(version, price, quantity, period, end, period[1])


def recurring_for(
    version: PlanVersion, price: PlanPrice, row: Record, start: datetime, end: datetime
) -> Decimal:
    """The recurring fee billed (in advance) for [start, end): what the minimum
    commitment counts beside the usage."""
    cycle = Cycle(row.billing_anchor, row.interval, row.interval_count)
    period = cycle.period_of(start) if start >= row.billing_anchor else (start, end)
    charge = charges.recurring(version, price, row.quantity, period, start, end)
    return charge.amount_precise if charge is not None else Decimal(0)


def _carried_credit(lines: list[Charge], currency: str, *, keep: bool) -> list[Charge]:
    """Nothing negative is ever due: when credits outweigh charges, a line brings the
    invoice to zero and the rest is carried to the subscription's next invoice."""
    total = sum((to_minor(line.amount_precise, currency) for line in lines), 0)
    if total >= 0:
        return []
    rest = -Decimal(total).scaleb(-minor_units(currency))
    description = "Credit carried to the next invoice" if keep else "Credit owed to the customer"
    return [
        Charge(kind="carried", description=description, quantity=Decimal(1), amount_precise=rest)
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
