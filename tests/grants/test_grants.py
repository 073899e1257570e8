"""Grants through the API: windows, revocation, values checked against the feature's
type, immutable plan versions, and idempotent creation under retries."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from tests.conftest import PLANS, Harness
from tests.factories import check, entitlements

pytestmark = pytest.mark.anyio


async def test_grant_window_is_half_open(harness: Harness) -> None:
    starts = harness.clock.now() + timedelta(days=1)
    ends = starts + timedelta(days=2)
    created = await harness.post(
        "/v1/customers/eve/grants",
        {"plan": "pro", "starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
    )
    assert created.json()["status"] == "scheduled"
    seen = []
    for moment in (starts - timedelta(microseconds=1), starts, ends - timedelta(seconds=1), ends):
        harness.clock.travel_to(moment)
        seen.append((await entitlements(harness, "eve"))["spaces.max"]["value"])  # type: ignore[index]
    assert seen == [3, 50, 50, 3]


async def test_revoke_is_idempotent_and_recorded_once(harness: Harness) -> None:
    grant = (
        await harness.post("/v1/customers/gus/grants", {"feature": "rag.enabled", "value": True})
    ).json()
    first = await harness.post(f"/v1/grants/{grant['id']}/revoke")
    second = await harness.post(f"/v1/grants/{grant['id']}/revoke")
    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] == second.json()["revoked_at"]
    assert first.json()["status"] == "revoked"
    events = await harness.get("/v1/audit/events", params={"type": "EntitlementRevoked"})
    revoked = [e for e in events.json()["events"] if e["data"]["grant_id"] == grant["id"]]
    assert [(e["data"]["key"], e["data"]["source"]) for e in revoked] == [("rag.enabled", "admin")]


async def test_feature_grant_value_is_checked_against_the_feature_type(harness: Harness) -> None:
    response = await harness.post(
        "/v1/customers/hal/grants", {"feature": "spaces.max", "value": True}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"detail": 'expected an integer or "unlimited"', "pointer": "#/value"}
    ]


async def test_grants_of_a_renamed_or_archived_plan_keep_their_values(harness: Harness) -> None:
    """Access follows the grant's plan version, never a plan's key or name."""
    await harness.post("/v1/customers/kim/grants", {"plan": "pro"})
    renamed = PLANS.read_text().replace("\n  pro:\n", "\n  professional:\n")
    await harness.apply_plans(renamed)
    catalog = (await harness.get("/v1/catalog")).json()
    assert "pro" not in [plan["key"] for plan in catalog["plans"]]
    result = await check(harness, customer="kim", feature="spaces.max", current=10)
    assert (result["allowed"], result["value"]) == (True, 50)
    assert result["source"]["plan"] == "pro"  # type: ignore[index]
    refused = await harness.post("/v1/customers/lea/grants", {"plan": "pro"})
    assert (refused.status_code, refused.json()["code"]) == (404, "plan_not_found")


async def test_idempotency_key_replays_the_first_answer(harness: Harness) -> None:
    headers = {**harness.admin, "Idempotency-Key": "grant-mo-1"}
    body = {"feature": "spaces.max", "value": 12}
    first = await harness.post("/v1/customers/mo/grants", body, headers=headers)
    retry = await harness.post("/v1/customers/mo/grants", body, headers=headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == first.json()
    grants = (await harness.get("/v1/customers/mo/grants")).json()["grants"]
    assert [g["id"] for g in grants] == [first.json()["id"]]
    other = await harness.post(
        "/v1/customers/mo/grants", {"feature": "spaces.max", "value": 13}, headers=headers
    )
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")


async def test_parallel_retries_with_one_idempotency_key_grant_once(harness: Harness) -> None:
    headers = {**harness.admin, "Idempotency-Key": "activate-no-1"}
    responses = await asyncio.gather(
        *(
            harness.post("/v1/customers/no/subscriptions", {"plan": "pro"}, headers=headers)
            for _ in range(12)
        )
    )
    assert {r.status_code for r in responses} == {201}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 11
    grants = (await harness.get("/v1/customers/no/grants")).json()["grants"]
    assert len(grants) == 1


async def test_parallel_revokes_record_the_revocation_once(harness: Harness) -> None:
    grant = (await harness.post("/v1/customers/pat/grants", {"plan": "pro"})).json()
    responses = await asyncio.gather(
        *(harness.post(f"/v1/grants/{grant['id']}/revoke") for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["revoked_at"] for r in responses}) == 1
    events = await harness.get(
        "/v1/audit/events", params={"customer": "pat", "type": "EntitlementRevoked", "limit": 500}
    )
    assert len(events.json()["events"]) == 8  # one per feature of pro, once
