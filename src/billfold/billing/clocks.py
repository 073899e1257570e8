"""Advancing a test clock: its customers' lifecycle and period close, run in time order
at the simulated instants (each period end, each draft's end of grace), so an integrator
rehearses months of billing in one request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.billing import dunning
from billfold.billing.close import CloseSettings, close_subscription, finalize_draft
from billfold.catalog.catalog import Catalog
from billfold.customers import clocks
from billfold.customers.clocks import TestClock
from billfold.invoicing import service as invoicing
from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput
from billfold.subscriptions import repository as subscription_rows

MAX_ADVANCE: Final = timedelta(days=5 * 366)  # one advance moves at most five years
MAX_STEPS: Final = 10_000  # closes and finalizations in one advance
BATCH: Final = 100


class TestClockCannotGoBack(InvalidInput):
    code = "test_clock_cannot_go_back"
    title = "A test clock only moves forward, and at most five years at a time"


@dataclass(frozen=True)
class Advanced:
    clock: TestClock
    closed: int
    invoices: int
    finalized: int


async def advance(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    clock_id: str,
    to: datetime,
    settings: CloseSettings,
) -> Advanced:
    """Move the clock to `to`, closing each period and finalizing each draft of its
    customers at the instant it falls due, earliest first."""
    clock = await clocks.get(session, ctx.tenant_id, clock_id, lock=True)
    if to <= clock.frozen_time or to - clock.frozen_time > MAX_ADVANCE:
        raise TestClockCannotGoBack(
            f"the clock is at {clock.frozen_time.isoformat()}; advance it to a later time, "
            "at most five years ahead",
            errors=[FieldError("after the clock's frozen_time", pointer="#/frozen_time")],
        )
    closed = made = finalized = 0
    for _step in range(MAX_STEPS):
        due = await subscription_rows.due_for_close(
            session, to, 1, tenant_id=ctx.tenant_id, test_clock_id=clock_id
        )
        drafts = await invoicing.due_drafts(
            session, to, limit=1, tenant_id=ctx.tenant_id, test_clock_id=clock_id
        )
        period_end = due[0].current_period_ends_at if due else None
        draft_due = drafts[0].finalize_at if drafts else None
        if period_end is None and draft_due is None:
            break
        if draft_due is None or (period_end is not None and period_end <= draft_due):
            assert period_end is not None
            result = await close_subscription(
                session, clocks.at(ctx, period_end), catalog, due[0].id, period_end, settings
            )
            closed += result is not None
            made += result is not None and result.invoice_id is not None
            finalized += result is not None and result.finalized
        else:
            done = await finalize_draft(
                session, clocks.at(ctx, draft_due), catalog, drafts[0].id, settings
            )
            finalized += done is not None
    else:
        raise TestClockCannotGoBack(
            f"advancing to {to.isoformat()} takes more than {MAX_STEPS} steps; advance less"
        )
    # As a run does, to the end: active to past due, then suspended if it has been past
    # due long enough by `to` (a subscription moves at most twice).
    for _pass in range(3):
        moving = await dunning.due(
            session, to, settings, MAX_STEPS, tenant_id=ctx.tenant_id, test_clock_id=clock_id
        )
        for row in moving:
            await dunning.move(session, clocks.at(ctx, to), catalog, row, settings)
        if not moving:
            break
    await clocks.move(session, ctx, clock_id, to)
    return Advanced(await clocks.get(session, ctx.tenant_id, clock_id), closed, made, finalized)
