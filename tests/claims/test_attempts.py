"""Redemption attempts: rate limits per customer and per address, and parallel
redemptions that never grant more than a code allows."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pytest

from billfold.catalog import catalog as catalog_reader
from billfold.claims import codes
from billfold.claims import service as claims_service
from billfold.customers import service as customers_service
from tests.claims.steps import (
    GENEROUS,
    create_batch,
    events_of,
    grants_of,
    harness_with,
    redeem,
)
from tests.conftest import (
    SECRET_KEY,
    START,
    assert_problem,
    postgresql_only,
)

pytestmark = pytest.mark.anyio


async def test_the_fourth_attempt_of_a_customer_in_a_window_is_429(database_url: str) -> None:
    async with harness_with(database_url, claim_attempts_per_customer=3) as harness:
        batch = await create_batch(harness, count=2)
        harness.clock.advance(timedelta(seconds=100))
        # Failed attempts count: three wrong codes use up the window ...
        assert_problem(
            await redeem(harness, "guesser", codes.generate()), 404, "claim_code_unknown"
        )
        assert_problem(await redeem(harness, "guesser", "nonsense"), 422, "claim_code_malformed")
        assert_problem(
            await redeem(harness, "guesser", codes.generate()), 404, "claim_code_unknown"
        )
        # ... so the fourth is refused even with a good code.
        refused = await redeem(harness, "guesser", batch["codes"][0])
        body = assert_problem(refused, 429, "rate_limited")
        window_s = harness.settings.claim_attempt_window_s
        elapsed = int(START.timestamp()) % window_s + 100
        assert refused.headers["Retry-After"] == str(window_s - elapsed)
        assert body["retry_after_s"] == window_s - elapsed
        assert await grants_of(harness, "guesser") == []

        # Another customer is not affected by this customer's attempts.
        other = await redeem(harness, "patient", batch["codes"][1])
        assert other.status_code == 200, other.text

        # The next window starts afresh, and the code was not used up by the refusal.
        harness.clock.advance(timedelta(seconds=int(refused.headers["Retry-After"])))
        later = await redeem(harness, "guesser", batch["codes"][0])
        assert later.status_code == 200, later.text


@pytest.mark.parametrize("length", [200, 254, 255])
async def test_a_customer_id_of_any_allowed_length_is_counted(
    database_url: str, length: int
) -> None:
    """The rate-limit key holds the tenant and the customer id: at 254 characters it
    outgrew its column, a 500 on PostgreSQL. Long keys are stored as a digest, and count
    all the same, each customer apart."""
    async with harness_with(database_url, claim_attempts_per_customer=2) as harness:
        long_id, other_id = "c" * length, "c" * (length - 1) + "d"
        for _ in range(2):
            unknown = await redeem(harness, long_id, codes.generate())
            assert_problem(unknown, 404, "claim_code_unknown")
        assert_problem(await redeem(harness, long_id, codes.generate()), 429, "rate_limited")
        assert_problem(await redeem(harness, other_id, codes.generate()), 404, "claim_code_unknown")


async def test_successful_attempts_count_too(database_url: str) -> None:
    async with harness_with(database_url, claim_attempts_per_customer=3) as harness:
        batch = await create_batch(harness, count=1)
        for _ in range(3):
            assert (await redeem(harness, "eager", batch["codes"][0])).status_code == 200
        assert_problem(await redeem(harness, "eager", batch["codes"][0]), 429, "rate_limited")


async def test_attempts_from_one_address_are_limited_across_customers(
    database_url: str,
) -> None:
    async with harness_with(
        database_url, claim_attempts_per_customer=100, claim_attempts_per_address=3
    ) as harness:
        batch = await create_batch(harness, count=1)
        for customer in ("sock-1", "sock-2", "sock-3"):
            response = await redeem(harness, customer, codes.generate())
            assert_problem(response, 404, "claim_code_unknown")
        refused = await redeem(harness, "sock-4", batch["codes"][0])
        assert_problem(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) > 0
        # Forwarded-for is not trusted unless configured: it cannot dodge the limit.
        dodged = await redeem(
            harness,
            "sock-5",
            batch["codes"][0],
            headers={**harness.admin, "X-Forwarded-For": "203.0.113.9"},
        )
        assert_problem(dodged, 429, "rate_limited")
        assert await grants_of(harness, "sock-4") == []


async def test_a_trusted_forwarded_address_is_limited_on_its_own(database_url: str) -> None:
    async with harness_with(
        database_url,
        claim_attempts_per_customer=100,
        claim_attempts_per_address=2,
        trust_forwarded_for=True,
    ) as harness:
        batch = await create_batch(harness, count=1)
        crowd = {**harness.admin, "X-Forwarded-For": "198.51.100.1, 10.0.0.1"}
        for customer in ("crowd-1", "crowd-2"):
            response = await redeem(harness, customer, codes.generate(), headers=crowd)
            assert_problem(response, 404, "claim_code_unknown")
        assert_problem(
            await redeem(harness, "crowd-3", codes.generate(), headers=crowd), 429, "rate_limited"
        )
        elsewhere = {**harness.admin, "X-Forwarded-For": "198.51.100.2"}
        response = await redeem(harness, "crowd-3", batch["codes"][0], headers=elsewhere)
        assert response.status_code == 200, response.text


# PostgreSQL only: SQLite starts every write transaction with BEGIN IMMEDIATE, so the
# requests run one after the other and there is no race to win; the issue asks for this
# property on PostgreSQL, where the transactions really overlap.
@postgresql_only
async def test_fifty_parallel_redemptions_of_a_ten_use_code_grant_exactly_ten(
    database_url: str,
) -> None:
    # Each attempt comes from its own customer and its own (trusted) address, so no
    # rate-limit counter row queues the requests: they really race for the claim code's
    # row, which is the race max_redemptions must survive.
    async with harness_with(database_url, **GENEROUS, trust_forwarded_for=True) as harness:
        batch = await create_batch(harness, count=1, max_redemptions=10)
        code = batch["codes"][0]
        customers = [f"racer-{n:02d}" for n in range(50)]
        responses = await asyncio.gather(
            *(
                redeem(
                    harness,
                    customer,
                    code,
                    headers={**harness.admin, "X-Forwarded-For": f"198.51.100.{n + 1}"},
                )
                for n, customer in enumerate(customers)
            )
        )
        statuses = Counter(response.status_code for response in responses)
        assert statuses == {200: 10, 409: 40}, [r.text for r in responses if r.status_code >= 500]
        winners = {
            customer
            for customer, response in zip(customers, responses, strict=True)
            if response.status_code == 200
        }
        for response in responses:
            if response.status_code == 409:
                assert response.json()["code"] == "claim_code_exhausted"
        grant_ids = set()
        for customer in customers:
            listed = await grants_of(harness, customer)
            if customer in winners:
                assert len(listed) == 1, (customer, listed)
                assert listed[0]["source"] == "kickstarter"
                grant_ids.add(listed[0]["id"])
            else:
                assert listed == [], (customer, listed)
        assert len(grant_ids) == 10
        assert len(await events_of(harness, type="ClaimCodeRedeemed")) == 10
        verified = await harness.get("/v1/audit/verify")
        assert verified.json()["ok"] is True, verified.text


# PostgreSQL only, for the same reason: SQLite runs write transactions one at a time.
@postgresql_only
@pytest.mark.parametrize("known_customer", [False, True], ids=["new", "known"])
@pytest.mark.parametrize("max_redemptions", [1, 10])
async def test_one_customer_redeeming_in_parallel_gets_one_grant(
    database_url: str, max_redemptions: int, known_customer: bool
) -> None:
    # Over the API the attempts of one customer share a rate-limit counter row, which
    # queues them; the service-level test below races them without that help.
    async with harness_with(database_url, **GENEROUS, trust_forwarded_for=True) as harness:
        batch = await create_batch(harness, count=1, max_redemptions=max_redemptions)
        code = batch["codes"][0]
        if known_customer:
            put = await harness.client.put(
                "/v1/customers/impatient", json={"name": "Impatient"}, headers=harness.admin
            )
            assert put.status_code in (200, 201), put.text
        responses = await asyncio.gather(
            *(
                redeem(
                    harness,
                    "impatient",
                    code,
                    headers={**harness.admin, "X-Forwarded-For": f"198.51.100.{n + 1}"},
                )
                for n in range(10)
            )
        )
        assert [r.status_code for r in responses] == [200] * 10, [r.text for r in responses]
        bodies = [r.json() for r in responses]
        assert len({body["grant"]["id"] for body in bodies}) == 1
        assert sorted(body["replayed"] for body in bodies) == [False] + [True] * 9
        listed = await grants_of(harness, "impatient")
        assert [g["id"] for g in listed] == [bodies[0]["grant"]["id"]]


# PostgreSQL only, for the same reason: SQLite runs write transactions one at a time.
@postgresql_only
@pytest.mark.parametrize("known_customer", [False, True], ids=["new", "known"])
@pytest.mark.parametrize("max_redemptions", [1, 10])
async def test_one_customer_racing_itself_in_the_service_gets_one_grant(
    database_url: str, max_redemptions: int, known_customer: bool
) -> None:
    """The same race below the API, where no rate-limit counter row queues the attempts
    (and, for a known customer, no customer insert does either): ten transactions redeem
    one code for one customer at once. Every one must answer the same grant, whatever
    max_redemptions is."""
    async with harness_with(database_url) as harness:
        batch = await create_batch(harness, count=1, max_redemptions=max_redemptions)
        code = batch["codes"][0]
        if known_customer:
            async with harness.database.transaction() as session:
                await customers_service.ensure(session, harness.operator(), "racing-self")

        async def attempt() -> claims_service.Redemption:
            async with harness.database.transaction() as session:
                loaded = await catalog_reader.current(session, harness.tenant_id)
                return await claims_service.redeem(
                    session,
                    harness.operator(),
                    loaded,
                    external_id="racing-self",
                    code=code,
                    secret_key=SECRET_KEY,
                )

        results = await asyncio.gather(*(attempt() for _ in range(10)), return_exceptions=True)
        failures = [r for r in results if not isinstance(r, claims_service.Redemption)]
        assert failures == []
        redemptions = [r for r in results if isinstance(r, claims_service.Redemption)]
        assert len({r.grant.id for r in redemptions}) == 1
        assert sum(not r.replayed for r in redemptions) == 1
        assert len(await grants_of(harness, "racing-self")) == 1
