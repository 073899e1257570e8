"""Admin subscriptions: each change moves the plan grant and writes the event log."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def spaces(harness: Harness, customer: str) -> object:
    response = await harness.get(f"/v1/customers/{customer}/entitlements")
    return response.json()["entitlements"]["spaces.max"]["value"]


async def event_types(harness: Harness, customer: str) -> list[str]:
    response = await harness.get("/v1/audit/events", params={"customer": customer, "limit": 500})
    return [event["type"] for event in response.json()["events"]]


async def test_activate_renew_cancel_moves_the_plan_grant(harness: Harness) -> None:
    period_end = harness.clock.now() + timedelta(days=30)
    activated = await harness.post(
        "/v1/customers/ann/subscriptions",
        {"plan": "pro", "billing": "external", "period_ends_at": period_end.isoformat()},
    )
    assert activated.status_code == 201, activated.text
    sub = activated.json()
    assert (sub["status"], sub["plan"], sub["plan_version"]) == ("active", "pro", 1)
    assert await spaces(harness, "ann") == 50

    renewed = await harness.post(
        f"/v1/subscriptions/{sub['id']}/renew",
        {"period_ends_at": (period_end + timedelta(days=30)).isoformat()},
    )
    assert renewed.status_code == 200, renewed.text
    harness.clock.travel_to(period_end + timedelta(days=1))
    assert await spaces(harness, "ann") == 50  # the renewal's grant carries on

    cancelled = await harness.post(f"/v1/subscriptions/{sub['id']}/cancel", {"reason": "test"})
    assert cancelled.json()["status"] == "canceled"
    assert await spaces(harness, "ann") == 3  # back to the free baseline

    types = await event_types(harness, "ann")
    assert types.count("SubscriptionActivated") == 1
    assert types.count("SubscriptionRenewed") == 1
    assert types.count("SubscriptionCancelled") == 1
    # One EntitlementGranted per feature of pro, for activation and for the renewal.
    assert types.count("EntitlementGranted") == 2 * 8
    # Only the renewal's grant was still live to revoke; the first had run out.
    assert types.count("EntitlementRevoked") == 8


async def test_renewing_to_the_same_end_is_a_no_op(harness: Harness) -> None:
    period_end = harness.clock.now() + timedelta(days=30)
    sub = (
        await harness.post(
            "/v1/customers/ben/subscriptions",
            {"plan": "pro", "billing": "external", "period_ends_at": period_end.isoformat()},
        )
    ).json()
    body = {"period_ends_at": (period_end + timedelta(days=30)).isoformat()}
    first = await harness.post(f"/v1/subscriptions/{sub['id']}/renew", body)
    retry = await harness.post(f"/v1/subscriptions/{sub['id']}/renew", body)
    assert first.json() == retry.json()
    grants = (await harness.get("/v1/customers/ben/grants")).json()["grants"]
    assert len(grants) == 2


async def test_renewal_must_move_the_end_later(harness: Harness) -> None:
    period_end = harness.clock.now() + timedelta(days=30)
    sub = (
        await harness.post(
            "/v1/customers/cal/subscriptions",
            {"plan": "pro", "billing": "external", "period_ends_at": period_end.isoformat()},
        )
    ).json()
    earlier = {"period_ends_at": (period_end - timedelta(days=1)).isoformat()}
    response = await harness.post(f"/v1/subscriptions/{sub['id']}/renew", earlier)
    assert response.status_code == 422
    assert response.json()["errors"][0]["pointer"] == "#/period_ends_at"


async def test_cancel_at_period_end_keeps_access_until_then(harness: Harness) -> None:
    period_end = harness.clock.now() + timedelta(days=10)
    sub = (
        await harness.post(
            "/v1/customers/dee/subscriptions",
            {"plan": "studio", "billing": "external", "period_ends_at": period_end.isoformat()},
        )
    ).json()
    cancelled = await harness.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    assert cancelled.json()["ends_at"] == period_end.isoformat().replace("+00:00", "Z")
    assert await spaces(harness, "dee") == "unlimited"
    again = await harness.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    assert again.json() == cancelled.json()  # a retry changes nothing
    harness.clock.travel_to(period_end)
    assert await spaces(harness, "dee") == 3


async def test_one_active_subscription_per_customer(harness: Harness) -> None:
    first = await harness.post("/v1/customers/eli/subscriptions", {"plan": "pro"})
    second = await harness.post("/v1/customers/eli/subscriptions", {"plan": "studio"})
    assert first.status_code == 201
    assert second.status_code == 409
    assert second.json()["code"] == "subscription_already_active"
    assert second.json()["subscription_id"] == first.json()["id"]


async def test_concurrent_activations_leave_one_subscription(harness: Harness) -> None:
    responses = await asyncio.gather(
        *(harness.post("/v1/customers/fin/subscriptions", {"plan": "pro"}) for _ in range(8))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    listed = (await harness.get("/v1/customers/fin/subscriptions")).json()["subscriptions"]
    assert len(listed) == 1
    grants = (await harness.get("/v1/customers/fin/grants")).json()["grants"]
    assert len(grants) == 1


async def test_unknown_plan_and_subscription(harness: Harness) -> None:
    missing_plan = await harness.post("/v1/customers/gil/subscriptions", {"plan": "gold"})
    assert (missing_plan.status_code, missing_plan.json()["code"]) == (404, "plan_not_found")
    missing = await harness.get("/v1/subscriptions/sub_" + "a" * 26)
    assert (missing.status_code, missing.json()["code"]) == (404, "subscription_not_found")
