"""Claim codes that grant one feature (`devmode.enabled` for 90 days) instead of a plan,
and the metadata a batch carries beyond campaign and tier, within its bounds."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from billfold.catalog import catalog as catalog_reader
from billfold.claims import service as claims_service
from tests.claims.steps import at, create_batch, events_of, grants_of, harness_with, redeem
from tests.conftest import SECRET_KEY, START, Harness, assert_problem, postgresql_only
from tests.factories import entitlements as entitlements_of

pytestmark = pytest.mark.anyio

DEVMODE = {"plan": None, "feature": "devmode.enabled", "duration": "90d"}


async def test_a_feature_code_grants_the_feature_for_its_duration(harness: Harness) -> None:
    extra = {"pledge": "early-bird", "backer_number": 42, "perks": ["sticker"]}
    batch = await create_batch(harness, **DEVMODE, metadata=extra)
    assert (batch["plan"], batch["feature"], batch["value"]) == (None, "devmode.enabled", True)
    assert batch["metadata"] == {**extra, "campaign": "KS-2026", "tier": "early-bird"}

    response = await redeem(harness, "dev-1", batch["codes"][0])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["plan"], body["feature"], body["replayed"]) == (None, "devmode.enabled", False)
    grant = body["grant"]
    assert (grant["plan"], grant["feature"], grant["value"]) == (None, "devmode.enabled", True)
    assert grant["source"] == "kickstarter"
    assert at(grant["ends_at"]) == START + timedelta(days=90)
    assert grant["metadata"] == {
        **batch["metadata"],
        "claim_batch_id": batch["id"],
        "claim_code_id": grant["metadata"]["claim_code_id"],
    }

    entitlements = await entitlements_of(harness, "dev-1")
    assert entitlements["devmode.enabled"]["value"] is True  # the free plan says false
    assert entitlements["devmode.enabled"]["source"]["grant_id"] == grant["id"]
    assert entitlements["spaces.max"]["value"] == 3  # nothing else: still the free plan

    harness.clock.travel_to(START + timedelta(days=90))
    assert (await entitlements_of(harness, "dev-1"))["devmode.enabled"]["value"] is False

    redeemed = await events_of(harness, type="ClaimCodeRedeemed")
    assert [e["data"]["grant_id"] for e in redeemed] == [grant["id"]]
    created = await events_of(harness, type="ClaimBatchCreated")
    assert (created[0]["data"]["feature"], created[0]["data"]["value"]) == ("devmode.enabled", True)


async def test_a_feature_code_carries_its_value(harness: Harness) -> None:
    batch = await create_batch(
        harness, plan=None, feature="share.readonly_links.max", value=25, duration="lifetime"
    )
    assert batch["value"] == 25
    response = await redeem(harness, "links", batch["codes"][0])
    assert response.status_code == 200, response.text
    assert response.json()["grant"]["value"] == 25
    assert (await entitlements_of(harness, "links"))["share.readonly_links.max"]["value"] == 25

    plugins = await create_batch(
        harness, plan=None, feature="plugins", value=["beta_*"], duration="30d"
    )
    assert (await redeem(harness, "plugger", plugins["codes"][0])).status_code == 200
    allowed = await harness.get("/v1/customers/plugger/plugins/beta_canvas")
    assert allowed.json()["allowed"] is True, allowed.text


async def test_redeeming_a_feature_code_again_grants_nothing_more(harness: Harness) -> None:
    batch = await create_batch(harness, **DEVMODE, count=1, max_redemptions=1)
    first = await redeem(harness, "again", batch["codes"][0])
    assert first.status_code == 200, first.text
    harness.clock.advance(timedelta(hours=1))
    second = await redeem(harness, "again", batch["codes"][0])
    assert second.status_code == 200, second.text
    assert second.json()["replayed"] is True
    assert second.json()["grant"] == first.json()["grant"]
    assert len(await grants_of(harness, "again")) == 1
    other = await redeem(harness, "someone-else", batch["codes"][0])
    assert_problem(other, 409, "claim_code_exhausted")


async def test_a_batch_that_grants_a_feature_wrongly_is_refused(harness: Harness) -> None:
    base: dict[str, Any] = {"count": 1, "duration": "90d"}

    async def refused(status: int, code: str, **body: Any) -> dict[str, Any]:
        response = await harness.post("/v1/claims/batches", {**base, **body})
        return assert_problem(response, status, code)

    both = await refused(422, "invalid_input", plan="pro", feature="devmode.enabled")
    assert both["errors"][0]["pointer"] == "#/plan"
    neither = await refused(422, "invalid_input")
    assert neither["errors"][0]["pointer"] == "#/plan"
    no_value = await refused(422, "invalid_input", feature="spaces.max")
    assert no_value["errors"][0]["pointer"] == "#/value"
    wrong = await refused(422, "invalid_input", feature="spaces.max", value="lots")
    assert wrong["errors"][0] == {
        "detail": 'expected an integer or "unlimited"',
        "pointer": "#/value",
    }
    plan_value = await refused(422, "invalid_input", plan="pro", value=3)
    assert plan_value["errors"][0]["pointer"] == "#/value"
    unknown = await refused(404, "feature_not_found", feature="teleport.enabled")
    assert unknown["errors"][0]["pointer"] == "#/feature"
    assert await events_of(harness, type="ClaimBatchCreated") == []


async def test_batch_metadata_is_bounded(harness: Harness) -> None:
    base: dict[str, Any] = {"plan": "beta_tester", "count": 1, "duration": "30d"}

    async def issue(**body: Any) -> Any:
        return await harness.post("/v1/claims/batches", {**base, **body})

    twenty = {f"k{n}": n for n in range(20)}
    assert (await issue(metadata=twenty)).status_code == 201
    body = assert_problem(await issue(metadata={**twenty, "k20": 20}), 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/metadata"
    big = {"notes": "x" * 4100}
    body = assert_problem(await issue(metadata=big), 422, "invalid_input")
    assert "4096 bytes" in body["errors"][0]["detail"]
    body = assert_problem(await issue(campaign="KS", metadata=twenty), 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/metadata"  # 21 keys with campaign
    reserved = assert_problem(await issue(metadata={"claim_code_id": "x"}), 422, "invalid_input")
    assert reserved["errors"][0]["pointer"] == "#/metadata/claim_code_id"
    twice = await issue(campaign="KS-1", metadata={"campaign": "KS-2"})
    assert assert_problem(twice, 422, "invalid_input")["errors"][0]["pointer"] == "#/campaign"
    assert (await issue(campaign="KS-1", metadata={"campaign": "KS-1"})).status_code == 201


# PostgreSQL only: SQLite runs write transactions one at a time, so there is no race.
@postgresql_only
async def test_racing_redemptions_of_a_feature_code_grant_at_most_its_limit(
    database_url: str,
) -> None:
    async with harness_with(database_url) as harness:
        batch = await create_batch(harness, **DEVMODE, count=1, max_redemptions=3)
        code = batch["codes"][0]

        async def attempt(customer: str) -> claims_service.Redemption:
            async with harness.database.transaction() as session:
                loaded = await catalog_reader.current(session, harness.tenant_id)
                return await claims_service.redeem(
                    session,
                    harness.operator(),
                    loaded,
                    external_id=customer,
                    code=code,
                    secret_key=SECRET_KEY,
                )

        customers = [f"dev-{n % 6}" for n in range(24)]  # six customers, four tries each
        results = await asyncio.gather(*(attempt(c) for c in customers), return_exceptions=True)
        redemptions = [r for r in results if isinstance(r, claims_service.Redemption)]
        refusals = [r for r in results if not isinstance(r, claims_service.Redemption)]
        assert all(isinstance(r, claims_service.ClaimCodeExhausted) for r in refusals), refusals
        winners = {r.customer for r in redemptions}
        assert len(winners) == 3
        assert sum(not r.replayed for r in redemptions) == 3
        for customer in sorted(set(customers)):
            held = await grants_of(harness, customer)
            assert len(held) == (1 if customer in winners else 0), (customer, held)
            if held:
                assert held[0]["feature"] == "devmode.enabled"


async def test_claims_refuse_text_no_backend_stores(harness: Harness) -> None:
    """A NUL in the redeeming customer or in a feature code's value is a 422 on both
    backends, as it is for a grant, never a write PostgreSQL refuses."""
    batch = await create_batch(harness, **DEVMODE, count=1)
    body = assert_problem(await redeem(harness, "dev\x00", batch["codes"][0]), 422, "invalid_input")
    assert "NUL" in body["errors"][0]["detail"]  # the request's schema says why (kit.text)
    base: dict[str, Any] = {"plan": None, "feature": "plugins", "count": 1, "duration": "30d"}
    for value in (["beta_\x00"], "beta_\x00"):
        response = await harness.post("/v1/claims/batches", {**base, "value": value})
        assert "NUL" in assert_problem(response, 422, "invalid_input")["errors"][0]["detail"]
    bad_key = await harness.post(
        "/v1/claims/batches", {**base, "value": ["beta_*"], "metadata": {"k\x00": 1}}
    )
    assert_problem(bad_key, 422, "invalid_input")


async def test_the_openapi_document_states_the_metadata_bound_claims_keep(harness: Harness) -> None:
    schemas = harness.app.openapi()["components"]["schemas"]
    assert schemas["BatchIn"]["properties"]["metadata"]["maxProperties"] == (
        claims_service.MAX_METADATA_KEYS
    )
