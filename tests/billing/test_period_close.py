"""Period close: subscriptions billed by invoice are renewed at each period end, their
usage rated through the meters, and their invoices made, finalized with gapless numbers,
never twice. Amounts are asserted in minor units."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from billfold.billing.close import CloseSettings
from billfold.billing.run import Report, run
from tests.conftest import Harness
from tests.factories import entitlements, events

pytestmark = pytest.mark.anyio

JAN_31 = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)


async def close(harness: Harness, until: datetime | None = None) -> Report:
    now = harness.clock.now()
    return await run(
        harness.database,
        until or now,
        now=now,
        settings=CloseSettings(grace=GRACE),
        tenant_id=harness.tenant_id,  # the tests' tenants share a database
    )


async def subscribe(harness: Harness, customer: str, **body: Any) -> dict[str, Any]:
    response = await harness.post(f"/v1/customers/{customer}/subscriptions", body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def invoices(harness: Harness, customer: str) -> list[dict[str, Any]]:
    response = await harness.get(f"/v1/customers/{customer}/invoices", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["invoices"]))  # oldest first


def lines(invoice: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["kind"], line["amount_minor"]) for line in invoice["lines"]]


async def test_a_month_of_pro_with_ai_token_overage(harness: Harness) -> None:
    harness.clock.travel_to(JAN_31)
    sub = await subscribe(harness, "ada", plan="pro")
    assert (sub["status"], sub["billing"], sub["currency"]) == ("active", "invoice", "USD")
    assert sub["current_period_ends_at"] == "2026-02-28T10:00:00Z"  # Jan 31 clamps

    # Billed in advance: the first period's fee at once, finalized by the next run.
    await close(harness)
    (first,) = await invoices(harness, "ada")
    assert (first["number"], first["status"], first["total_minor"]) == (
        "INV-2026-000001",
        "open",
        2900,
    )
    assert lines(first) == [("recurring", 2900)]

    # 250,000 tokens: 100,000 included, 150,000 at 2.00 per 100,000.
    await events(harness, "ada", count=5, at=JAN_31 + timedelta(days=3), tokens=50_000)
    harness.clock.travel_to(datetime(2026, 2, 28, 10, 0, tzinfo=UTC))
    report = await close(harness)
    assert (report.closed, report.invoices, report.finalized) == (1, 1, 0)  # grace: a draft
    second = (await invoices(harness, "ada"))[1]
    assert (second["status"], second["number"]) == ("draft", None)
    assert lines(second) == [("usage", 300), ("recurring", 2900)]

    # Late usage of the closed period lands on the draft until its grace ends.
    await events(harness, "ada", count=1, at=datetime(2026, 2, 27, tzinfo=UTC), tokens=50_000)
    harness.clock.advance(GRACE)
    assert (await close(harness)).finalized == 1
    second = (await invoices(harness, "ada"))[1]
    assert (second["number"], second["status"]) == ("INV-2026-000002", "open")
    usage = second["lines"][0]  # arrears first, as period close placed them
    assert (usage["kind"], usage["quantity"], usage["amount_minor"]) == ("usage", "300000", 400)
    assert usage["amount_precise"] == "4"  # kept exact beside the rounded amount
    assert second["total_minor"] == 2900 + 400
    assert (second["period_start"], second["period_end"]) == (
        "2026-01-31T10:00:00Z",
        "2026-02-28T10:00:00Z",
    )
    renewed = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert renewed["current_period_ends_at"] == "2026-03-31T10:00:00Z"  # back to the 31st


async def test_period_close_twice_or_in_parallel_invoices_once(harness: Harness) -> None:
    harness.clock.travel_to(JAN_31)
    for name in ("p1", "p2", "p3", "p4", "p5"):
        await subscribe(harness, name, plan="pro")
    harness.clock.travel_to(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))  # four periods behind
    reports = await asyncio.gather(*(close(harness) for _ in range(4)))
    assert sum(r.closed for r in reports) == 5 * 4
    assert not any(r.failed for r in reports)
    again = await close(harness)
    assert (again.closed, again.invoices, again.finalized) == (0, 0, 0)
    numbers = []
    for name in ("p1", "p2", "p3", "p4", "p5"):
        made = await invoices(harness, name)
        assert len(made) == 5  # the first period, then one per closed period
        assert len({i["period_end"] for i in made}) == 5
        numbers += [i["number"] for i in made]
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, 26)]  # gapless


async def test_a_trial_converts_or_lapses(harness: Harness) -> None:
    harness.clock.travel_to(JAN_31)
    converts = await subscribe(harness, "tia", plan="studio")
    lapses = await subscribe(harness, "lou", plan="studio", cancel_at_period_end=True)
    assert converts["status"] == "trialing"
    assert converts["trial_ends_at"] == "2026-02-14T10:00:00Z"  # the price's 14 days
    assert (await entitlements(harness, "lou"))["spaces.max"]["value"] == "unlimited"
    await close(harness)
    assert await invoices(harness, "tia") == []  # nothing is billed during a trial

    harness.clock.travel_to(datetime(2026, 2, 14, 11, 0, tzinfo=UTC))
    await close(harness)
    converted = (await harness.get(f"/v1/subscriptions/{converts['id']}")).json()
    assert (converted["status"], converted["current_period_ends_at"]) == (
        "active",
        "2026-03-14T10:00:00Z",
    )
    (first,) = await invoices(harness, "tia")
    assert lines(first) == [("recurring", 9900)]
    lapsed = (await harness.get(f"/v1/subscriptions/{lapses['id']}")).json()
    assert (lapsed["status"], lapsed["ends_at"]) == ("canceled", "2026-02-14T10:00:00Z")
    assert await invoices(harness, "lou") == []
    assert (await entitlements(harness, "lou"))["spaces.max"]["value"] == 3


async def test_calendar_billing_prorates_the_first_period(harness: Harness) -> None:
    harness.clock.travel_to(datetime(2026, 2, 15, 0, 0, tzinfo=UTC))
    sub = await subscribe(harness, "cal", plan="pro", billing_cycle="calendar")
    assert sub["current_period_ends_at"] == "2026-03-01T00:00:00Z"
    await close(harness)
    (first,) = await invoices(harness, "cal")
    assert lines(first) == [("recurring", 1450)]  # 14 of February's 28 days
    assert first["lines"][0]["amount_precise"] == "14.5"


async def test_cancel_at_period_end_then_undo_then_cancel(harness: Harness) -> None:
    harness.clock.travel_to(JAN_31)
    sub = await subscribe(harness, "cy", plan="pro")
    scheduled = await harness.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    assert (scheduled.json()["status"], scheduled.json()["cancel_at_period_end"]) == (
        "active",
        True,
    )
    undone = await harness.post(f"/v1/subscriptions/{sub['id']}/undo-cancel")
    assert (undone.json()["cancel_at_period_end"], undone.json()["ends_at"]) == (False, None)
    await harness.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    await events(harness, "cy", count=1, at=JAN_31 + timedelta(days=1), tokens=200_000)
    harness.clock.travel_to(datetime(2026, 2, 28, 12, 0, tzinfo=UTC))
    await close(harness)
    ended = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert (ended["status"], ended["ends_at"]) == ("canceled", "2026-02-28T10:00:00Z")
    final = (await invoices(harness, "cy"))[-1]
    assert (final["reason"], lines(final)) == ("subscription_end", [("usage", 200)])
    assert (await entitlements(harness, "cy"))["spaces.max"]["value"] == 3
    again = await harness.post(f"/v1/subscriptions/{sub['id']}/undo-cancel")
    assert again.status_code == 409
    assert (again.json()["code"], again.json()["current_status"]) == (
        "subscription_transition_not_allowed",
        "canceled",
    )


async def test_an_upgrade_mid_period_is_prorated_by_day(harness: Harness) -> None:
    harness.clock.travel_to(datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    sub = await subscribe(harness, "up", plan="pro")
    harness.clock.travel_to(datetime(2026, 4, 21, 0, 0, tzinfo=UTC))  # 10 of 30 days left
    changed = await harness.post(f"/v1/subscriptions/{sub['id']}/change", {"plan": "studio"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["plan"], changed.json()["status"]) == ("studio", "active")
    assert (await entitlements(harness, "up"))["spaces.max"]["value"] == "unlimited"
    harness.clock.travel_to(datetime(2026, 5, 1, 1, 0, tzinfo=UTC))
    await close(harness)
    cycle = (await invoices(harness, "up"))[-1]
    # -29.00 x 10/30 and +99.00 x 10/30 for the rest of April, then May's 99.00.
    assert lines(cycle) == [("proration", -967), ("proration", 3300), ("recurring", 9900)]
    assert cycle["total_minor"] == 12233


async def test_a_downgrade_waits_for_the_period_end(harness: Harness) -> None:
    harness.clock.travel_to(datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    sub = await subscribe(harness, "dn", plan="studio", trial_days=0)
    changed = await harness.post(f"/v1/subscriptions/{sub['id']}/change", {"plan": "pro"})
    assert changed.json()["plan"] == "studio"
    assert changed.json()["scheduled_change"]["plan"] == "pro"
    assert (await entitlements(harness, "dn"))["spaces.max"]["value"] == "unlimited"
    harness.clock.travel_to(datetime(2026, 5, 1, 1, 0, tzinfo=UTC))
    await close(harness)
    after = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert (after["plan"], after["scheduled_change"]) == ("pro", None)
    assert lines((await invoices(harness, "dn"))[-1]) == [("recurring", 2900)]
    assert (await entitlements(harness, "dn"))["spaces.max"]["value"] == 50


async def test_pause_and_resume(harness: Harness) -> None:
    harness.clock.travel_to(datetime(2026, 4, 1, 0, 0, tzinfo=UTC))
    sub = await subscribe(harness, "pa", plan="pro")
    harness.clock.travel_to(datetime(2026, 4, 16, 0, 0, tzinfo=UTC))
    paused = await harness.post(f"/v1/subscriptions/{sub['id']}/pause")
    assert paused.json()["status"] == "paused"
    assert (await entitlements(harness, "pa"))["spaces.max"]["value"] == 3
    wrong = await harness.post(f"/v1/subscriptions/{sub['id']}/change", {"quantity": "2"})
    assert (wrong.status_code, wrong.json()["current_status"]) == (409, "paused")
    harness.clock.travel_to(datetime(2026, 5, 1, 1, 0, tzinfo=UTC))
    await close(harness)
    # The unused half of April is credited; nothing recurring is billed while paused.
    assert lines((await invoices(harness, "pa"))[-1]) == [("proration", -1450), ("carried", 1450)]
    harness.clock.travel_to(datetime(2026, 5, 16, 0, 0, tzinfo=UTC))
    resumed = await harness.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert resumed.json()["status"] == "active"
    assert (await entitlements(harness, "pa"))["spaces.max"]["value"] == 50
    harness.clock.travel_to(datetime(2026, 6, 1, 1, 0, tzinfo=UTC))
    await close(harness)
    # The carried credit, the rest of May (16 of 31 days), then June.
    assert lines((await invoices(harness, "pa"))[-1]) == [
        ("credit", -1450),
        ("proration", 1497),
        ("recurring", 2900),
    ]


async def test_a_transition_the_state_machine_refuses_is_a_409(harness: Harness) -> None:
    sub = await subscribe(harness, "sm", plan="pro")
    resumed = await harness.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert (resumed.status_code, resumed.json()["current_status"]) == (409, "active")
    await harness.post(f"/v1/subscriptions/{sub['id']}/cancel")
    for action, body in (("cancel", None), ("pause", None), ("change", {"plan": "studio"})):
        refused = await harness.post(f"/v1/subscriptions/{sub['id']}/{action}", body)
        assert refused.status_code == 409, (action, refused.text)
        assert refused.json()["code"] == "subscription_transition_not_allowed"
        assert refused.json()["current_status"] == "canceled"


async def test_the_upcoming_invoice_is_what_the_period_close_will_make(harness: Harness) -> None:
    harness.clock.travel_to(JAN_31)
    await subscribe(harness, "uma", plan="pro")
    await events(harness, "uma", count=3, at=JAN_31 + timedelta(days=2), tokens=100_000)
    harness.clock.travel_to(JAN_31 + timedelta(days=10))
    preview = await harness.get("/v1/customers/uma/upcoming-invoice")
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["period_end"] == "2026-02-28T10:00:00Z"
    assert [(line["kind"], line["amount_minor"]) for line in body["lines"]] == [
        ("usage", 400),  # 300,000 tokens so far: 200,000 past the included 100,000
        ("recurring", 2900),  # the next month, billed ahead
    ]
    assert body["total_minor"] == 3300
    harness.clock.travel_to(datetime(2026, 2, 28, 11, 0, tzinfo=UTC))
    await close(harness)
    made = (await invoices(harness, "uma"))[-1]
    assert lines(made) == [(line["kind"], line["amount_minor"]) for line in body["lines"]]
    nobody = await harness.get("/v1/customers/nobody/upcoming-invoice")
    assert nobody.status_code == 404
    await harness.post("/v1/customers/ext/subscriptions", {"plan": "beta_tester"})
    unbilled = await harness.get("/v1/customers/ext/upcoming-invoice")
    assert (unbilled.status_code, unbilled.json()["code"]) == (404, "no_upcoming_invoice")


async def test_an_overdue_invoice_makes_past_due_then_suspended_then_active_again(
    harness: Harness,
) -> None:
    harness.clock.travel_to(JAN_31)
    sub = await subscribe(harness, "owe", plan="pro")
    await close(harness)
    (invoice,) = await invoices(harness, "owe")
    assert invoice["due_at"] == "2026-03-02T10:00:00Z"  # 30 days after it was issued
    harness.clock.travel_to(datetime(2026, 3, 2, 11, 0, tzinfo=UTC))
    report = await close(harness)
    assert report.dunned == 1
    state = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert state["status"] == "past_due"
    assert (await entitlements(harness, "owe"))["spaces.max"]["value"] == 50  # still on pro
    harness.clock.travel_to(datetime(2026, 3, 16, 11, 0, tzinfo=UTC))  # 14 days overdue
    await close(harness)
    state = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert state["status"] == "suspended"
    assert (await entitlements(harness, "owe"))["spaces.max"]["value"] == 3
    for made in await invoices(harness, "owe"):
        if made["status"] == "open":
            await harness.post(f"/v1/invoices/{made['id']}/payments")
    await close(harness)
    state = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert state["status"] == "active"
    assert (await entitlements(harness, "owe"))["spaces.max"]["value"] == 50
    types = [
        e["type"]
        for e in (await harness.get("/v1/audit/events", params={"limit": 500})).json()["events"]
    ]
    for kind in ("SubscriptionPastDue", "SubscriptionSuspended", "SubscriptionReactivated"):
        assert kind in types


async def test_an_unknown_currency_is_named_as_such(harness: Harness) -> None:
    unknown = await harness.post(
        "/v1/customers/cur/subscriptions", {"plan": "pro", "currency": "XYZ"}
    )
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_currency")
    assert unknown.json()["errors"][0]["pointer"] == "#/currency"
    unpriced = await harness.post(
        "/v1/customers/cur/subscriptions", {"plan": "pro", "currency": "JPY"}
    )
    assert (unpriced.status_code, unpriced.json()["code"]) == (422, "price_not_found")
