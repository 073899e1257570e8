"""Grants in, entitlements out: resolution rules, the check API and plugin access."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Harness
from tests.factories import check, entitlements, grant, subscription

pytestmark = pytest.mark.anyio


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
    pro = await grant(harness, "bob", plan="pro")
    result = await check(harness, customer="bob", feature="spaces.max", current=3)
    assert (result["allowed"], result["value"], result["remaining"]) == (True, 50, 47)
    source = result["source"]
    assert isinstance(source, dict)
    assert (source["grant_id"], source["source"], source["plan"]) == (
        pro.id,
        "admin",
        "pro",
    )


async def test_limits_take_the_maximum_and_unlimited_wins(harness: Harness) -> None:
    await grant(harness, "cy", feature="spaces.max", value=70)
    await grant(harness, "cy", plan="pro")
    assert (await entitlements(harness, "cy"))["spaces.max"]["value"] == 70  # type: ignore[index]
    await grant(harness, "cy", plan="studio")
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
    await grant(harness, "di", feature="devmode.enabled", value=True)
    await grant(harness, "di", feature="plugins", value=["beta_*", "extra"])
    resolved = await entitlements(harness, "di")
    assert resolved["devmode.enabled"]["value"] is True  # type: ignore[index]
    assert resolved["plugins"]["value"] == ["basic_*", "beta_*", "extra"]  # type: ignore[index]
    denied = await check(harness, customer="di", feature="share.enabled")
    assert (denied["allowed"], denied["reason"], denied["source"]) == (False, "not_enabled", None)


async def test_check_follows_the_clock_across_grant_edges(harness: Harness) -> None:
    """A cached answer holds only between grant edges, whichever way the clock moves."""
    starts = harness.clock.now() + timedelta(days=1)
    ends = starts + timedelta(days=2)
    await grant(harness, "eli", plan="pro", starts_at=starts, days=2)
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
    pro = await grant(harness, "fay", plan="pro")
    before = harness.clock.now()
    harness.clock.advance(timedelta(hours=1))
    await harness.post(f"/v1/grants/{pro.id}/revoke", {"reason": "test"})
    now = await entitlements(harness, "fay")
    then = await harness.get("/v1/customers/fay/entitlements", params={"at": before.isoformat()})
    assert now["spaces.max"]["value"] == 3  # type: ignore[index]
    assert then.json()["entitlements"]["spaces.max"]["value"] == 50


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
    await subscription(harness, "ivy", "pro")
    upgraded = await harness.get("/v1/customers/ivy/plugins/premium_export")
    assert (upgraded.json()["allowed"], upgraded.json()["matched_pattern"]) == (True, "*")


async def test_pattern_check_through_the_check_api(harness: Harness) -> None:
    result = await check(harness, customer="jo", feature="plugins", requested="basic_tool")
    assert (result["allowed"], result["reason"]) == (True, "pattern_matched")
    result = await check(harness, customer="jo", feature="plugins", requested="pro_tool")
    assert (result["allowed"], result["reason"]) == (False, "no_matching_pattern")
