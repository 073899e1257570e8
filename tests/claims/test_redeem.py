"""Redeeming claim codes through the API: a code becomes a grant of its plan with the
batch's source and metadata, once per customer, and every wrong code has its own code."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billfold.claims import codes
from tests.claims.steps import (
    BETA_FEATURES,
    at,
    create_batch,
    events_of,
    grants_of,
    harness_with,
    iso,
    redeem,
    typo_of,
)
from tests.conftest import (
    START,
    Harness,
    assert_problem,
)
from tests.factories import entitlements as entitlements_of

pytestmark = pytest.mark.anyio


async def test_redeeming_grants_the_plan_with_the_batch_source_and_metadata(
    harness: Harness,
) -> None:
    batch = await create_batch(harness)
    service_key = await harness.key("service")
    response = await redeem(harness, "backer-1", batch["codes"][0], headers=service_key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer"] == "backer-1"
    assert body["plan"] == "beta_tester"
    assert body["batch_id"] == batch["id"]
    assert body["replayed"] is False
    assert at(body["redeemed_at"]) == START
    grant = body["grant"]
    assert grant["id"].startswith("grt_")
    assert grant["source"] == "kickstarter"
    assert grant["plan"] == "beta_tester"
    assert grant["feature"] is None
    assert grant["status"] == "live"
    assert grant["metadata"]["campaign"] == "KS-2026"
    assert grant["metadata"]["tier"] == "early-bird"
    assert grant["metadata"]["claim_batch_id"] == batch["id"]
    assert at(grant["starts_at"]) == START
    assert at(grant["ends_at"]) == START + timedelta(days=365)

    entitlements = await entitlements_of(harness, "backer-1")
    for key, value in BETA_FEATURES.items():
        assert entitlements[key]["value"] == value, key
    spaces = entitlements["spaces.max"]
    assert spaces["source"]["grant_id"] == grant["id"]
    assert spaces["source"]["source"] == "kickstarter"
    assert spaces["source"]["plan"] == "beta_tester"
    assert at(spaces["source"]["ends_at"]) == START + timedelta(days=365)
    assert grant["id"] in {item["grant_id"] for item in spaces["grants"]}

    plugin = await harness.get("/v1/customers/backer-1/plugins/beta_canvas")
    assert plugin.status_code == 200, plugin.text
    assert plugin.json()["allowed"] is True
    assert plugin.json()["source"]["grant_id"] == grant["id"]

    listed = await grants_of(harness, "backer-1")
    assert [g["id"] for g in listed] == [grant["id"]]


async def test_a_365_day_grant_ends_after_365_days_and_the_free_plan_returns(
    harness: Harness,
) -> None:
    batch = await create_batch(harness)
    response = await redeem(harness, "backer-2", batch["codes"][0])
    assert response.status_code == 200, response.text
    grant_id = response.json()["grant"]["id"]
    ends_at = START + timedelta(days=365)

    harness.clock.travel_to(ends_at - timedelta(seconds=1))
    entitlements = await entitlements_of(harness, "backer-2")
    assert entitlements["spaces.max"]["value"] == 20
    assert entitlements["spaces.max"]["source"]["grant_id"] == grant_id

    harness.clock.travel_to(ends_at)  # the window is [starts_at, ends_at)
    entitlements = await entitlements_of(harness, "backer-2")
    assert entitlements["spaces.max"]["value"] == 3
    assert entitlements["share.enabled"]["value"] is False
    assert entitlements["plugins"]["value"] == ["basic_*"]
    assert entitlements["spaces.max"]["source"]["grant_id"] != grant_id
    assert entitlements["spaces.max"]["source"]["plan"] == "free"
    listed = await grants_of(harness, "backer-2")
    assert [(g["id"], g["status"]) for g in listed] == [(grant_id, "ended")]


async def test_a_lifetime_code_grants_without_an_end(harness: Harness) -> None:
    batch = await create_batch(harness, duration="lifetime")
    assert batch["duration"] == "lifetime"
    response = await redeem(harness, "lifer", batch["codes"][0])
    assert response.status_code == 200, response.text
    grant = response.json()["grant"]
    assert grant["ends_at"] is None
    assert grant["metadata"]["tier"] == "early-bird"

    harness.clock.advance(timedelta(days=3650))
    entitlements = await entitlements_of(harness, "lifer")
    assert entitlements["spaces.max"]["value"] == 20
    assert entitlements["spaces.max"]["source"]["grant_id"] == grant["id"]
    assert entitlements["spaces.max"]["source"]["ends_at"] is None


async def test_redeeming_again_answers_the_same_grant_and_grants_nothing_more(
    harness: Harness,
) -> None:
    batch = await create_batch(harness)
    code = batch["codes"][0]
    first = await redeem(harness, "repeat", code)
    assert first.status_code == 200, first.text
    first_body = first.json()
    events_before = await events_of(harness, customer="repeat")

    harness.clock.advance(timedelta(hours=2))
    compact = code.replace("-", "")
    for typed in (code, code.lower(), compact, code.replace("-", " ").lower()):
        again = await redeem(harness, "repeat", typed)
        assert again.status_code == 200, again.text
        body = again.json()
        assert body["replayed"] is True
        assert body["grant"]["id"] == first_body["grant"]["id"]
        assert body["grant"] == first_body["grant"]
        assert body["batch_id"] == first_body["batch_id"]
        assert at(body["redeemed_at"]) == START  # when it was redeemed, not now

    listed = await grants_of(harness, "repeat")
    assert [g["id"] for g in listed] == [first_body["grant"]["id"]]
    assert await events_of(harness, customer="repeat") == events_before


async def test_an_unknown_code_is_404(harness: Harness) -> None:
    await create_batch(harness)
    never_issued = codes.generate()  # well-formed, check character right, never issued
    response = await redeem(harness, "curious", never_issued)
    assert_problem(response, 404, "claim_code_unknown")
    assert await grants_of(harness, "curious") == []


async def test_a_code_of_another_tenant_is_unknown(harness: Harness, database_url: str) -> None:
    batch = await create_batch(harness)
    async with harness_with(database_url) as other:
        response = await redeem(other, "tenant-hopper", batch["codes"][0])
        assert_problem(response, 404, "claim_code_unknown")
    # ... and the code is still unused in its own tenant.
    response = await redeem(harness, "tenant-hopper", batch["codes"][0])
    assert response.status_code == 200, response.text


async def test_a_typo_is_malformed_not_unknown(harness: Harness) -> None:
    batch = await create_batch(harness)
    code = batch["codes"][0]
    response = await redeem(harness, "typist", typo_of(code))
    body = assert_problem(response, 422, "claim_code_malformed")
    assert body["errors"][0]["pointer"] == "#/code"
    for garbage in ("hello", code[:-1], code + "A", code.replace("-", "_")):
        assert_problem(await redeem(harness, "typist", garbage), 422, "claim_code_malformed")
    assert await grants_of(harness, "typist") == []
    # The typos did not use the code up.
    assert (await redeem(harness, "typist", code)).status_code == 200


async def test_an_expired_code_is_410(harness: Harness) -> None:
    expires_at = START + timedelta(days=30)
    batch = await create_batch(harness, expires_at=iso(expires_at))
    harness.clock.travel_to(expires_at - timedelta(seconds=1))
    just_in_time = await redeem(harness, "punctual", batch["codes"][0])
    assert just_in_time.status_code == 200, just_in_time.text

    harness.clock.travel_to(expires_at)
    response = await redeem(harness, "late", batch["codes"][1])
    body = assert_problem(response, 410, "claim_code_expired")
    assert "expired" in body["detail"]
    harness.clock.advance(timedelta(days=400))
    assert_problem(await redeem(harness, "later", batch["codes"][2]), 410, "claim_code_expired")
    assert await grants_of(harness, "late") == []


async def test_an_exhausted_code_is_409(harness: Harness) -> None:
    batch = await create_batch(harness, max_redemptions=1)
    code = batch["codes"][0]
    first = await redeem(harness, "first-backer", code)
    assert first.status_code == 200, first.text
    second = await redeem(harness, "second-backer", code)
    assert_problem(second, 409, "claim_code_exhausted")
    assert await grants_of(harness, "second-backer") == []
    assert (await entitlements_of(harness, "second-backer"))["spaces.max"]["value"] == 3
    # The customer who redeemed it still gets the same answer.
    again = await redeem(harness, "first-backer", code)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert again.json()["grant"]["id"] == first.json()["grant"]["id"]


async def test_a_code_with_several_redemptions_serves_that_many_customers(
    harness: Harness,
) -> None:
    batch = await create_batch(harness, count=1, max_redemptions=3)
    code = batch["codes"][0]
    grant_ids = set()
    for customer in ("team-a", "team-b", "team-c"):
        response = await redeem(harness, customer, code)
        assert response.status_code == 200, response.text
        grant_ids.add(response.json()["grant"]["id"])
    assert len(grant_ids) == 3
    # A repeat by one of them does not use up a redemption, and a fourth customer is refused.
    assert (await redeem(harness, "team-a", code)).json()["replayed"] is True
    assert_problem(await redeem(harness, "team-d", code), 409, "claim_code_exhausted")


async def test_a_revoked_code_is_410(harness: Harness) -> None:
    batch = await create_batch(harness, count=3)
    first, second, third = batch["codes"]

    revoked = await harness.post("/v1/claims/revoke", {"code": first.lower()})
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked": 1}
    assert_problem(await redeem(harness, "too-late", first), 410, "claim_code_revoked")
    again = await harness.post("/v1/claims/revoke", {"code": first})
    assert again.json() == {"revoked": 0}
    assert_problem(
        await harness.post("/v1/claims/revoke", {"code": codes.generate()}),
        404,
        "claim_code_unknown",
    )
    assert_problem(
        await harness.post("/v1/claims/revoke", {"code": typo_of(first)}),
        422,
        "claim_code_malformed",
    )

    # Revoking the batch revokes the codes that were not revoked yet.
    whole = await harness.post(f"/v1/claims/batches/{batch['id']}/revoke")
    assert whole.status_code == 200, whole.text
    assert whole.json() == {"revoked": 2}
    for code in (second, third):
        assert_problem(await redeem(harness, "too-late", code), 410, "claim_code_revoked")
    assert await grants_of(harness, "too-late") == []

    missing = await harness.post(f"/v1/claims/batches/clb_{'a' * 26}/revoke")
    assert_problem(missing, 404, "claim_batch_not_found")

    revocations = await events_of(harness, type="ClaimCodesRevoked")
    assert len(revocations) == 2
    assert revocations[1]["data"]["batch_id"] == batch["id"]


async def test_redemption_is_recorded_in_the_event_log(harness: Harness) -> None:
    batch = await create_batch(harness)
    response = await redeem(harness, "logged", batch["codes"][0])
    assert response.status_code == 200, response.text
    grant = response.json()["grant"]

    events = await events_of(harness, customer="logged")
    granted = [e for e in events if e["type"] == "EntitlementGranted"]
    assert {e["data"]["key"]: e["data"]["value"] for e in granted} == BETA_FEATURES
    for event in granted:
        assert event["customer"] == "logged"
        assert event["data"]["source"] == "kickstarter"
        assert event["data"]["grant_id"] == grant["id"]
        assert event["actor"]["kind"] == "api_key"
    redeemed = [e for e in events if e["type"] == "ClaimCodeRedeemed"]
    assert len(redeemed) == 1
    assert redeemed[0]["data"]["grant_id"] == grant["id"]
    assert redeemed[0]["data"]["batch_id"] == batch["id"]
    assert redeemed[0]["data"]["claim_code_id"] == grant["metadata"]["claim_code_id"]
    assert redeemed[0]["seq"] > max(e["seq"] for e in granted)
    # All of it in one request, hence one correlation id.
    assert len({e["correlation_id"] for e in events}) == 1

    created = await events_of(harness, type="ClaimBatchCreated")
    assert [e["data"]["batch_id"] for e in created] == [batch["id"]]
    assert "codes" not in created[0]["data"]

    verified = await harness.get("/v1/audit/verify")
    assert verified.status_code == 200, verified.text
    assert verified.json()["ok"] is True
