"""Test clocks: a year of billing rehearsed in one request, for test-mode customers only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.billing.test_period_close import close, invoices, subscribe
from tests.conftest import Harness, assert_problem

pytestmark = pytest.mark.anyio


async def clock(harness: Harness, at: str, *customers: str) -> dict[str, Any]:
    created = await harness.post("/v1/test-clocks", {"name": "rehearsal", "frozen_time": at})
    assert created.status_code == 201, created.text
    for customer in customers:
        added = await harness.post(
            f"/v1/test-clocks/{created.json()['id']}/customers", {"customer": customer}
        )
        assert added.status_code == 201, added.text
    return dict(created.json())


async def advance(harness: Harness, clock_id: str, to: str) -> dict[str, Any]:
    response = await harness.post(f"/v1/test-clocks/{clock_id}/advance", {"frozen_time": to})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_year_of_billing_in_one_request(harness: Harness) -> None:
    rehearsal = await clock(harness, "2026-01-31T10:00:00Z", "tc-ada")
    sub = await subscribe(harness, "tc-ada", plan="pro")
    assert sub["started_at"] == "2026-01-31T10:00:00Z"  # the clock's time, not the real one
    done = await advance(harness, rehearsal["id"], "2027-01-31T12:00:00Z")
    assert (done["closed"], done["invoices"], done["finalized"]) == (12, 12, 13)
    assert done["clock"]["frozen_time"] == "2027-01-31T12:00:00Z"
    made = await invoices(harness, "tc-ada")
    assert [i["period_end"][:10] for i in made[1:4]] == ["2026-02-28", "2026-03-31", "2026-04-30"]
    assert all(i["status"] == "open" and i["total_minor"] == 2900 for i in made)
    # Test-mode invoices are numbered apart from the real ones.
    assert [i["number"] for i in made[:2]] == ["TEST-INV-2026-000001", "TEST-INV-2026-000002"]
    assert made[-1]["number"] == "TEST-INV-2027-000001"
    renewed = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert renewed["current_period_ends_at"] == "2027-02-28T10:00:00Z"
    # A year unpaid: past due, and suspended once past due for 14 days, as a run does.
    assert renewed["status"] == "suspended"
    # Paid at the clock's time, not the real one; the next advance makes it active again.
    for invoice in made:
        paid = await harness.post(f"/v1/invoices/{invoice['id']}/payments")
        assert paid.status_code == 201, paid.text
        assert paid.json()["payments"][0]["paid_at"] == "2027-01-31T12:00:00Z"
    await advance(harness, rehearsal["id"], "2027-02-01T00:00:00Z")
    paid_up = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert paid_up["status"] == "active"

    # The real period close never touches a test clock's customers.
    harness.clock.travel_to(harness.clock.now().replace(year=2028))
    report = await close(harness)
    assert (report.closed, report.finalized) == (0, 0)


async def test_a_trial_on_a_clock_lapses(harness: Harness) -> None:
    rehearsal = await clock(harness, "2026-03-01T00:00:00Z", "tc-lou")
    sub = await subscribe(harness, "tc-lou", plan="studio", cancel_at_period_end=True)
    assert sub["trial_ends_at"] == "2026-03-15T00:00:00Z"
    await advance(harness, rehearsal["id"], "2026-03-20T00:00:00Z")
    lapsed = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert (lapsed["status"], lapsed["ends_at"]) == ("canceled", "2026-03-15T00:00:00Z")
    assert await invoices(harness, "tc-lou") == []


async def test_live_customers_never_go_on_a_clock(harness: Harness) -> None:
    await subscribe(harness, "live-ann", plan="pro")
    rehearsal = await clock(harness, "2026-01-01T00:00:00Z")
    refused = await harness.post(
        f"/v1/test-clocks/{rehearsal['id']}/customers", {"customer": "live-ann"}
    )
    assert_problem(refused, 409, "customer_is_live")
    back = await harness.post(
        f"/v1/test-clocks/{rehearsal['id']}/advance", {"frozen_time": "2025-12-31T00:00:00Z"}
    )
    assert assert_problem(back, 422, "test_clock_cannot_go_back")["errors"][0]["pointer"] == (
        "#/frozen_time"
    )
    missing = await harness.get("/v1/test-clocks/clk_" + "a" * 26)
    assert_problem(missing, 404, "test_clock_not_found")
    customer = (await harness.get("/v1/customers/live-ann")).json()
    assert customer["test_clock_id"] is None
