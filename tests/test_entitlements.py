"""Grants in, entitlements out: resolution rules, the check API and plugin access."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from billfold.entitlements.schemas import CheckOut
from tests.conftest import EXAMPLE_PLANS, Harness

pytestmark = pytest.mark.anyio


async def entitlements(harness: Harness, customer: str) -> dict[str, object]:
    response = await harness.get(f"/v1/customers/{customer}/entitlements")
    assert response.status_code == 200, response.text
    return dict(response.json()["entitlements"])


async def check(harness: Harness, **body: object) -> dict[str, object]:
    response = await harness.post("/v1/entitlements/check", body)
    assert response.status_code == 200, response.text
    CheckOut.model_validate_json(response.content)  # the hot path builds plain data
    return dict(response.json())


async def test_free_customer_is_limited_to_three_spaces(harness: Harness) -> None:
    allowed = await check(harness, customer="ada", feature="spaces.max", current=2)
    denied = await check(harness, customer="ada", feature="spaces.max", current=3)
    assert (allowed["allowed"], allowed["remaining"], allowed["reason"]) == (
        True,
        1,
        "within_limit",
    )
    assert (denied["allowed"], denied["remaining"], denied["reason"]) == (False, 0, "limit_reached")
    assert denied["source"] == {
        "grant_id": None,
        "source": "default",
        "plan": "free",
        "plan_version": 1,
        "value": 3,
        "ends_at": None,
    }


async def test_requested_counts_against_the_limit(harness: Harness) -> None:
    result = await check(harness, customer="ada", feature="spaces.max", current=1, requested=3)
    assert (result["allowed"], result["remaining"]) == (False, 2)


async def test_plan_grant_raises_the_limit_and_names_its_grant(harness: Harness) -> None:
    grant = await harness.post("/v1/customers/bob/grants", {"plan": "pro"})
    assert grant.status_code == 201, grant.text
    result = await check(harness, customer="bob", feature="spaces.max", current=3)
    assert (result["allowed"], result["value"], result["remaining"]) == (True, 50, 47)
    source = result["source"]
    assert isinstance(source, dict)
    assert (source["grant_id"], source["source"], source["plan"]) == (
        grant.json()["id"],
        "admin",
        "pro",
    )


async def test_limits_take_the_maximum_and_unlimited_wins(harness: Harness) -> None:
    await harness.post("/v1/customers/cy/grants", {"feature": "spaces.max", "value": 70})
    await harness.post("/v1/customers/cy/grants", {"plan": "pro"})
    assert (await entitlements(harness, "cy"))["spaces.max"]["value"] == 70  # type: ignore[index]
    await harness.post("/v1/customers/cy/grants", {"plan": "studio"})
    resolved = (await entitlements(harness, "cy"))["spaces.max"]
    assert resolved["value"] == "unlimited"  # type: ignore[index]
    assert resolved["source"]["plan"] == "studio"  # type: ignore[index]
    assert len(resolved["grants"]) == 4  # type: ignore[index]  # default + three grants
    result = await check(harness, customer="cy", feature="spaces.max", current=10_000)
    assert (result["allowed"], result["remaining"], result["reason"]) == (
        True,
        "unlimited",
        "unlimited",
    )


async def test_booleans_are_ored_and_patterns_unioned(harness: Harness) -> None:
    await harness.post("/v1/customers/di/grants", {"feature": "devmode.enabled", "value": True})
    await harness.post(
        "/v1/customers/di/grants", {"feature": "plugins", "value": ["beta_*", "extra"]}
    )
    resolved = await entitlements(harness, "di")
    assert resolved["devmode.enabled"]["value"] is True  # type: ignore[index]
    assert resolved["plugins"]["value"] == ["basic_*", "beta_*", "extra"]  # type: ignore[index]
    denied = await check(harness, customer="di", feature="share.enabled")
    assert (denied["allowed"], denied["reason"], denied["source"]) == (False, "not_enabled", None)


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


async def test_check_follows_the_clock_across_grant_edges(harness: Harness) -> None:
    """A cached answer holds only between grant edges, whichever way the clock moves."""
    starts = harness.clock.now() + timedelta(days=1)
    ends = starts + timedelta(days=2)
    await harness.post(
        "/v1/customers/eli/grants",
        {"plan": "pro", "starts_at": starts.isoformat(), "ends_at": ends.isoformat()},
    )
    seen = []
    for moment in (
        starts - timedelta(microseconds=1),
        starts,
        ends - timedelta(seconds=1),
        ends,
        starts + timedelta(hours=1),  # back in time: still cached per span, not per call
        starts - timedelta(days=1),
    ):
        harness.clock.travel_to(moment)
        answer = await check(harness, customer="eli", feature="spaces.max", current=10)
        seen.append((answer["allowed"], answer["value"]))
    assert seen == [(False, 3), (True, 50), (True, 50), (False, 3), (True, 50), (False, 3)]


async def test_entitlements_at_a_past_moment(harness: Harness) -> None:
    grant = (await harness.post("/v1/customers/fay/grants", {"plan": "pro"})).json()
    before = harness.clock.now()
    harness.clock.advance(timedelta(hours=1))
    await harness.post(f"/v1/grants/{grant['id']}/revoke", {"reason": "test"})
    now = await entitlements(harness, "fay")
    then = await harness.get("/v1/customers/fay/entitlements", params={"at": before.isoformat()})
    assert now["spaces.max"]["value"] == 3  # type: ignore[index]
    assert then.json()["entitlements"]["spaces.max"]["value"] == 50


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


async def test_unknown_customer_without_default_plan_is_404(harness: Harness) -> None:
    await harness.apply_plans(
        """
version: 1
features: {spaces.max: {type: limit}}
plans: {pro: {features: {spaces.max: 10}}}
"""
    )
    response = await harness.get("/v1/customers/nobody/entitlements")
    assert response.status_code == 404
    assert response.json()["code"] == "customer_not_found"


async def test_plugin_access_from_the_pattern_feature(harness: Harness) -> None:
    free_basic = await harness.get("/v1/customers/ivy/plugins/basic_notes")
    free_other = await harness.get("/v1/customers/ivy/plugins/premium_export")
    assert free_basic.json()["allowed"] is True
    assert free_basic.json()["matched_pattern"] == "basic_*"
    assert (free_other.json()["allowed"], free_other.json()["matched_pattern"]) == (False, None)
    await harness.post("/v1/customers/ivy/subscriptions", {"plan": "pro"})
    upgraded = await harness.get("/v1/customers/ivy/plugins/premium_export")
    assert (upgraded.json()["allowed"], upgraded.json()["matched_pattern"]) == (True, "*")


async def test_pattern_check_through_the_check_api(harness: Harness) -> None:
    result = await check(harness, customer="jo", feature="plugins", requested="basic_tool")
    assert (result["allowed"], result["reason"]) == (True, "pattern_matched")
    result = await check(harness, customer="jo", feature="plugins", requested="pro_tool")
    assert (result["allowed"], result["reason"]) == (False, "no_matching_pattern")


async def test_grants_of_a_renamed_or_archived_plan_keep_their_values(harness: Harness) -> None:
    """Access follows the grant's plan version, never a plan's key or name."""
    await harness.post("/v1/customers/kim/grants", {"plan": "pro"})
    renamed = EXAMPLE_PLANS.read_text().replace("\n  pro:\n", "\n  professional:\n")
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
