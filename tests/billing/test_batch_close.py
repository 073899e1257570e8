"""Period close closes a batch of subscriptions in one transaction (`close_many`), by a
few statements for the whole batch. A batch must close each subscription exactly as
closing it alone does: the same invoice lines, the same state after, the same event-log
entries. And one subscription that cannot be closed must not stop the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from billfold.billing.close import CloseSettings, close_many, close_subscription
from billfold.billing.run import run
from billfold.catalog import catalog as catalogs
from billfold.kit.tables import event_log
from billfold.subscriptions.tables import subscriptions
from tests.conftest import Harness
from tests.factories import events

pytestmark = pytest.mark.anyio

APRIL = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)
CLOSE_AT = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)  # April's periods end, their grace too
SETTINGS = CloseSettings(grace=timedelta(hours=1))


async def subscribe(harness: Harness, customer: str, **body: Any) -> str:
    response = await harness.post(f"/v1/customers/{customer}/subscriptions", body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def act(harness: Harness, subscription_id: str, action: str, body: Any = None) -> None:
    response = await harness.post(f"/v1/subscriptions/{subscription_id}/{action}", body)
    assert response.status_code == 200, response.text


async def every_kind_of_period(harness: Harness, group: str) -> dict[str, str]:
    """One subscription of each kind period close treats apart, for customers named
    `<kind>-<group>`: {kind: subscription id}."""
    harness.clock.travel_to(APRIL)
    made = {
        "usage": await subscribe(harness, f"usage-{group}", plan="pro"),
        "trial": await subscribe(harness, f"trial-{group}", plan="studio"),
        "ending": await subscribe(
            harness, f"ending-{group}", plan="pro", cancel_at_period_end=True
        ),
        "downgrade": await subscribe(harness, f"downgrade-{group}", plan="studio", trial_days=0),
        "upgrade": await subscribe(harness, f"upgrade-{group}", plan="pro"),
        "canceled": await subscribe(harness, f"canceled-{group}", plan="pro"),
        "paused": await subscribe(harness, f"paused-{group}", plan="pro"),
        "coupon": await subscribe(harness, f"coupon-{group}", plan="pro", coupon="LAUNCH20"),
        "outside": await subscribe(
            harness,
            f"outside-{group}",
            plan="pro",
            billing="external",
            period_ends_at="2026-05-01T00:00:00Z",
            cancel_at_period_end=True,
        ),
    }
    await events(harness, f"usage-{group}", count=5, at=APRIL + timedelta(days=3), tokens=50_000)
    await events(harness, f"ending-{group}", count=1, at=APRIL + timedelta(days=4), tokens=150_000)
    await act(harness, made["downgrade"], "change", {"plan": "pro"})
    harness.clock.travel_to(APRIL + timedelta(days=15))
    await act(harness, made["upgrade"], "change", {"plan": "studio"})
    await act(harness, made["canceled"], "cancel", {"prorate_credit": True})
    await act(harness, made["paused"], "pause")
    return made


async def what_it_made(harness: Harness, subscription_id: str) -> dict[str, Any]:
    """What closing did to a subscription, without ids, numbers or names."""
    found = (await harness.get(f"/v1/subscriptions/{subscription_id}")).json()
    customer = found["customer"]
    made = (await harness.get(f"/v1/customers/{customer}/invoices", params={"limit": 100})).json()[
        "invoices"
    ]
    async with harness.database.transaction(write=False) as session:
        types = (
            await session.execute(
                event_log.select()
                .with_only_columns(event_log.c.type)
                .where(event_log.c.tenant_id == harness.tenant_id)
                .where(event_log.c.data["subscription_id"].as_string() == subscription_id)
                .order_by(event_log.c.seq)
            )
        ).scalars()
        entries = list(types)
    return {
        "subscription": {
            key: found[key]
            for key in (
                "status",
                "plan",
                "current_period_ends_at",
                "cancel_at_period_end",
                "ends_at",
                "scheduled_change",
                "discount",
            )
        },
        "invoices": [
            (
                invoice["reason"],
                invoice["status"],
                invoice["total_minor"],
                invoice["number"] is not None,
                [
                    (line["kind"], line["amount_precise"], line["amount_minor"])
                    for line in invoice["lines"]
                ],
            )
            for invoice in made
        ],
        "entries": entries,
    }


async def test_a_batch_closes_each_subscription_as_closing_it_alone_does(harness: Harness) -> None:
    batched = await every_kind_of_period(harness, "batched")
    alone = await every_kind_of_period(harness, "alone")
    harness.clock.travel_to(CLOSE_AT)
    ctx = harness.operator()
    async with harness.database.transaction() as session:
        catalog = await catalogs.current(session, harness.tenant_id)
        closed = await close_many(session, ctx, catalog, list(batched.values()), CLOSE_AT, SETTINGS)
    assert len(closed) == len(batched)
    for subscription_id in alone.values():
        async with harness.database.transaction() as session:
            catalog = await catalogs.current(session, harness.tenant_id)
            one = await close_subscription(
                session, ctx, catalog, subscription_id, CLOSE_AT, SETTINGS
            )
        assert one is not None
    for kind in batched:
        assert await what_it_made(harness, batched[kind]) == await what_it_made(
            harness, alone[kind]
        ), kind
    usage = await what_it_made(harness, batched["usage"])
    # 250,000 tokens, 150,000 past the included 100,000: 3.00, then May's fee ahead.
    assert usage["invoices"][0][4] == [("usage", "3", 300), ("recurring", "29", 2900)]
    assert usage["entries"][-1] == "SubscriptionRenewed"
    # Closed once: a second batch over the same subscriptions finds nothing due.
    async with harness.database.transaction() as session:
        catalog = await catalogs.current(session, harness.tenant_id)
        again = await close_many(session, ctx, catalog, list(batched.values()), CLOSE_AT, SETTINGS)
    assert again == []


async def test_one_subscription_that_cannot_be_closed_does_not_stop_its_batch(
    harness: Harness,
) -> None:
    harness.clock.travel_to(APRIL)
    ids = [await subscribe(harness, f"b{n}", plan="pro") for n in range(5)]
    async with harness.database.transaction() as session:  # a price it no longer has
        await session.execute(
            update(subscriptions).where(subscriptions.c.id == ids[2]).values(currency="JPY")
        )
    harness.clock.travel_to(CLOSE_AT)
    report = await run(
        harness.database,
        CLOSE_AT,
        now=CLOSE_AT,
        settings=SETTINGS,
        tenant_id=harness.tenant_id,
    )
    assert [failed for failed, _error in report.failed] == [ids[2]]
    assert "price_not_found" in report.failed[0][1] or "JPY" in report.failed[0][1]
    assert report.closed == 4  # the batch was rolled back, then each closed alone
    for n in (0, 1, 3, 4):
        found = (await harness.get(f"/v1/customers/b{n}/invoices")).json()["invoices"]
        assert [i["reason"] for i in found] == ["subscription_cycle", "subscription_create"]


async def test_drafts_are_finalized_together_and_late_usage_lands_on_its_own_draft(
    harness: Harness,
) -> None:
    harness.clock.travel_to(APRIL)
    for n in range(4):
        await subscribe(harness, f"d{n}", plan="pro")
        await events(harness, f"d{n}", count=1, at=APRIL + timedelta(days=2), tokens=150_000)
    period_end = datetime(2026, 5, 1, 0, 0, tzinfo=UTC)
    report = await run(
        harness.database,
        period_end,
        now=period_end,
        settings=SETTINGS,
        tenant_id=harness.tenant_id,
    )
    assert (report.closed, report.invoices) == (4, 4)  # cycle drafts wait for their grace
    await events(harness, "d2", count=1, at=period_end - timedelta(hours=1), tokens=100_000)
    report = await run(
        harness.database, CLOSE_AT, now=CLOSE_AT, settings=SETTINGS, tenant_id=harness.tenant_id
    )
    assert (report.finalized, report.failed) == (4, [])
    numbers = []
    for n in range(4):
        found = (await harness.get(f"/v1/customers/d{n}/invoices")).json()["invoices"]
        cycle = found[0]
        assert cycle["status"] == "open"
        usage = [line["amount_minor"] for line in cycle["lines"] if line["kind"] == "usage"]
        assert usage == ([300] if n == 2 else [100]), n  # 250,000 tokens for d2, late
        numbers += [invoice["number"] for invoice in found]
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, 9)]  # gapless
