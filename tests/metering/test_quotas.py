"""Metered features: quotas per reset period, top-ups, atomic consume, enforcement."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from billfold.app import create_app
from billfold.catalog import service as catalog_service
from billfold.catalog.catalog import Catalog
from billfold.catalog.quotas import Enforcement
from billfold.kit.db import Database
from billfold.metering.quotas import consume as quotas
from billfold.metering.quotas.batcher import ConsumeBatcher
from billfold.metering.quotas.lookup import Enforcing
from billfold.metering.quotas.reported import draw_reported
from tests.conftest import Harness, assert_problem, new_harness, postgresql_only
from tests.factories import grant, quota_usage

pytestmark = pytest.mark.anyio

CONSUME = "/v1/entitlements/consume"


@pytest.fixture
async def enforcing(database_url: str) -> AsyncIterator[Harness]:
    built = await new_harness(database_url, enforcement=Enforcement.ENFORCE)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


async def consume(
    harness: Harness, key: str, amount: Any = 4000, customer: str = "ada", **extra: Any
) -> httpx.Response:
    body = {"customer": customer, "feature": "ai.tokens", "amount": amount, "idempotency_key": key}
    return await harness.post(CONSUME, {**body, **extra})


def metric(exposition: str, name: str) -> float:
    """A metric's value in a /metrics page (0 when absent)."""
    for line in exposition.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[-1])
    return 0.0


async def test_the_free_plan_gives_10000_tokens_a_month(harness: Harness) -> None:
    standing = await quota_usage(harness, "nobody")
    assert standing == {
        "used": "0",
        "remaining": "10000",
        "limit": "10000",
        "overage": "0",
        "resets_at": "2026-07-01T00:00:00Z",
        "enforcement": "advisory",
    }
    first = await consume(harness, "k1")
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["used"], body["remaining"], body["replayed"]) == ("4000", "6000", False)
    assert body["event_id"].startswith("use_")


async def test_a_retry_is_replayed_and_counts_once(harness: Harness) -> None:
    first = (await consume(harness, "same")).json()
    again = (await consume(harness, "same")).json()
    assert again["replayed"] is True
    assert again["event_id"] == first["event_id"]
    assert (await quota_usage(harness))["used"] == "4000"


async def test_advisory_allows_and_records_the_overage(harness: Harness) -> None:
    for key in ("a", "b"):
        assert (await consume(harness, key)).status_code == 200
    over = await consume(harness, "c")
    assert over.status_code == 200, over.text
    assert (over.json()["overage"], over.json()["remaining"]) == ("2000", "0")
    events = (await harness.get("/v1/audit/events", params={"type": "QuotaExceeded"})).json()
    assert [e["data"]["overage"] for e in events["events"]] == ["2000"]
    metrics = (await harness.client.get("/metrics")).text
    assert (
        'billfold_quota_overage_total{enforcement="advisory",feature="ai.tokens"} 2000.0' in metrics
    )


async def test_enforce_refuses_with_402_and_names_the_upgrades(enforcing: Harness) -> None:
    for key in ("a", "b"):
        assert (await consume(enforcing, key)).status_code == 200
    refused = await consume(enforcing, "c")
    body = assert_problem(refused, 402, "quota_exceeded")
    assert (body["remaining"], body["requested"], body["resets_at"]) == (
        "2000",
        "4000",
        "2026-07-01T00:00:00Z",
    )
    # beta_tester would cover it too, but it is not for sale (a claim code's plan).
    assert [plan["plan"] for plan in body["upgrade"]] == ["pro", "studio"]
    assert body["detail"] == "ai.tokens: 4000 requested, 2000 left until 2026-07-01T00:00:00Z"
    assert (await quota_usage(enforcing))["used"] == "8000"  # nothing recorded
    small = await consume(enforcing, "d", amount=2000)
    assert small.json()["remaining"] == "0"


async def test_the_quota_resets_with_the_calendar_month(enforcing: Harness) -> None:
    for key in ("a", "b"):
        await consume(enforcing, key, amount=5000)
    assert_problem(await consume(enforcing, "c", amount=1), 402, "quota_exceeded")
    enforcing.clock.travel_to(enforcing.clock.now().replace(month=7, day=1, hour=0))
    assert (await consume(enforcing, "c", amount=1)).json()["remaining"] == "9999"


async def test_a_top_up_is_drawn_before_the_allowance_when_it_ends_first(
    enforcing: Harness,
) -> None:
    ends = enforcing.clock.now() + timedelta(days=10)
    await grant(enforcing, "ada", feature="ai.tokens", value=50000, ends_at=ends)
    assert (await quota_usage(enforcing))["limit"] == "60000"
    assert (await consume(enforcing, "a", amount=55000)).json()["remaining"] == "5000"
    # The top-up ends: 5,000 of the month's allowance were drawn, 5,000 are left.
    enforcing.clock.travel_to(ends)
    assert (await quota_usage(enforcing))["remaining"] == "5000"


async def test_reported_usage_draws_on_the_quota(enforcing: Harness) -> None:
    reported = await enforcing.post(
        "/v1/events",
        [
            {
                "idempotency_key": "r1",
                "customer": "ada",
                "type": "ai.tokens",
                "properties": {"tokens": 9000, "model": "gpt-4o"},
            }
        ],
    )
    assert reported.json()["accepted"] == 1
    assert (await quota_usage(enforcing))["used"] == "9000"
    refused = await consume(enforcing, "c", amount=2000)
    assert assert_problem(refused, 402, "quota_exceeded")["remaining"] == "1000"
    check = await enforcing.post(
        "/v1/entitlements/check", {"customer": "ada", "feature": "ai.tokens", "requested": 1000}
    )
    assert (check.json()["allowed"], check.json()["remaining"]) == (True, "1000")


async def test_consume_refuses_what_is_not_a_metered_feature(harness: Harness) -> None:
    response = await harness.post(
        CONSUME,
        {"customer": "ada", "feature": "spaces.max", "amount": 1, "idempotency_key": "x"},
    )
    assert_problem(response, 404, "feature_not_found")
    assert_problem(await consume(harness, "y", amount=0), 422, "invalid_input")
    assert_problem(await consume(harness, "z", amount=-5), 422, "invalid_input")


@postgresql_only
async def test_64_parallel_consumes_never_overspend(enforcing: Harness) -> None:
    answers = await asyncio.gather(*(consume(enforcing, f"p{i}", amount=300) for i in range(64)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 33  # 33 x 300 = 9,900 of 10,000
    assert statuses.count(402) == 31, [a.text for a in answers if a.status_code not in (200, 402)]
    assert (await quota_usage(enforcing))["used"] == "9900"
    metered = await enforcing.get("/v1/customers/ada/usage", params={"meter": "ai_tokens"})
    assert metered.json()["buckets"][0]["value"] == "9900"


@postgresql_only  # two processes' batches racing for one account's row
async def test_two_processes_consuming_one_quota_never_overspend(enforcing: Harness) -> None:
    """A second app on the same database stands for a second server process: its
    batches race the first one's for the same account, unlocked and locked alike."""
    database = Database(enforcing.settings.database_url, pool_size=5)
    other = create_app(enforcing.settings, clock=enforcing.clock, database=database)
    transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://b.test") as client:
            body = {"customer": "ada", "feature": "ai.tokens", "amount": 300}

            async def either(i: int) -> httpx.Response:
                if i % 2:
                    return await consume(enforcing, f"p{i}", amount=300)
                sent = {**body, "idempotency_key": f"p{i}"}
                return await client.post(CONSUME, json=sent, headers=enforcing.admin)

            answers = await asyncio.gather(*(either(i) for i in range(96)))
            scraped = [(await c.get("/metrics")).text for c in (enforcing.client, client)]
    finally:
        await database.dispose()
    unlocked = sum(metric(text, "billfold_consume_unlocked_total") for text in scraped)
    assert unlocked > 0  # some consumes were answered without a lock
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == 33, [a.text for a in answers if a.status_code != 402]
    assert statuses.count(402) == 63
    assert (await quota_usage(enforcing))["used"] == "9900"
    metered = await enforcing.get("/v1/customers/ada/usage", params={"meter": "ai_tokens"})
    assert metered.json()["buckets"][0]["value"] == "9900"


async def stored_catalog(harness: Harness) -> Catalog:
    async with harness.database.transaction(write=False) as session:
        catalog, _archived = await catalog_service.stored(session, harness.tenant_id)
    return catalog


def consume_request(
    harness: Harness, catalog: Catalog, key: str, amount: int, customer: str = "ada"
) -> quotas.ConsumeRequest:
    return quotas.prepare_consume(
        harness.operator(),
        catalog,
        customer,
        "ai.tokens",
        Decimal(amount),
        key,
        enforcing=Enforcing(Enforcement.ENFORCE),
    )


async def until_the_unlocked_write_waits(harness: Harness) -> None:
    """Until an unlocked write waits for a row lock that another transaction holds."""
    async with harness.database.autocommit() as watcher:  # a fresh view each time
        for _ in range(250):
            waiting = await watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%INSERT INTO quota_accounts AS a%'"
                )
            )
            if waiting:
                return
            await asyncio.sleep(0.02)
    raise AssertionError("the unlocked write never waited for the row lock")


@postgresql_only  # the unlocked path is PostgreSQL's; on SQLite every batch locks
@pytest.mark.parametrize("existing", [True, False], ids=["account", "new-account"])
@pytest.mark.parametrize("writer_kind", ["consume", "reported"])
async def test_an_unlocked_draw_is_not_stored_when_its_account_moved(
    enforcing: Harness, existing: bool, writer_kind: str
) -> None:
    """Consume's unlocked path writes an account only at the version it read: a draw
    from a state that another writer (a consume under lock, or reported usage) moved
    meanwhile stores nothing, and is handed back (None) to be drawn again under lock."""
    if existing:
        assert (await consume(enforcing, "first", amount=1000)).status_code == 200
    catalog = await stored_catalog(enforcing)

    async def unlocked() -> tuple[list[Any], set[tuple[str, str]]]:
        async with enforcing.database.autocommit() as session:
            request = consume_request(enforcing, catalog, "unlocked", 4000)
            answers, locked = await quotas.consume_unlocked(session, [request])
            return list(answers), locked

    async with enforcing.database.transaction() as writer:
        if writer_kind == "consume":  # it holds the account until the block ends
            await quotas.consume_batch(writer, [consume_request(enforcing, catalog, "l", 4000)])
        else:
            reported = {
                "type": "ai.tokens",
                "customer": "ada",
                "occurred_at": enforcing.clock.now(),
                "properties": {"tokens": 4000},
            }
            await draw_reported(
                writer, enforcing.operator(), catalog, [reported], late_window=timedelta(days=1)
            )
        loser = asyncio.create_task(unlocked())
        await until_the_unlocked_write_waits(enforcing)
    # The writer committed first: nothing is stored, and the account goes under lock.
    assert await loser == ([None], {("ada", "ai.tokens")})
    used = 1000 * existing + 4000
    assert (await quota_usage(enforcing))["used"] == str(used)
    again = await consume(enforcing, "unlocked")  # through the API, it is stored once
    assert (again.status_code, again.json()["used"]) == (200, str(used + 4000))
    assert (await quota_usage(enforcing))["used"] == str(used + 4000)


@postgresql_only  # the unlocked path is PostgreSQL's; on SQLite every batch locks
async def test_a_consume_answered_from_a_redrawn_key_is_redrawn_with_it(
    enforcing: Harness,
) -> None:
    """Ada's consume with key K loses its unlocked race, and under lock it is refused, so
    K is never stored. Bob's consume with the same K, in the same batch, must not be told
    that K belongs to Ada's usage: it is drawn again too, and K becomes Bob's."""
    catalog = await stored_catalog(enforcing)
    batcher = ConsumeBatcher(
        enforcing.database, late_window=timedelta(days=7), snapshots=lambda: None
    )
    async with enforcing.database.transaction() as writer:
        await quotas.consume_batch(writer, [consume_request(enforcing, catalog, "l", 8000)])
        both = asyncio.gather(
            batcher.consume(consume_request(enforcing, catalog, "K", 4000)),
            batcher.consume(consume_request(enforcing, catalog, "K", 1, customer="bob")),
            return_exceptions=True,
        )
        await until_the_unlocked_write_waits(enforcing)
    ada, bob = await both
    await batcher.close()
    assert isinstance(ada, quotas.QuotaExceeded)  # 8,000 of 10,000 were gone
    assert isinstance(bob, quotas.Consumed), bob
    assert (bob.replayed, bob.customer) == (False, "bob")
    assert (await quota_usage(enforcing, "bob"))["used"] == "1"


async def test_a_retry_after_the_quota_ran_out_is_replayed(enforcing: Harness) -> None:
    """A refusal stores nothing, so the retry of a consume that took the last of the
    quota is still recognised: it is replayed, not refused."""
    first = await consume(enforcing, "all", amount=10000)
    assert first.status_code == 200, first.text
    again = await consume(enforcing, "all", amount=10000)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert again.json()["event_id"] == first.json()["event_id"]
    assert (await quota_usage(enforcing))["used"] == "10000"


@postgresql_only  # the trigger of migration 0006 is PostgreSQL's
async def test_every_update_of_an_account_moves_its_version(harness: Harness) -> None:
    """A writer that does not know the version column (a process of the code before it,
    during a rolling upgrade) still moves it: an unlocked write cannot overwrite it."""
    assert (await consume(harness, "v1", amount=10)).status_code == 200
    query = "SELECT version FROM quota_accounts WHERE tenant_id = :t AND customer = 'ada'"
    async with harness.database.transaction() as session:
        before = await session.scalar(text(query), {"t": harness.tenant_id})
        await session.execute(
            text("UPDATE quota_accounts SET updated_at = updated_at WHERE tenant_id = :t"),
            {"t": harness.tenant_id},
        )
        assert await session.scalar(text(query), {"t": harness.tenant_id}) == before + 1


async def test_consume_records_the_amount_exactly_or_refuses_it(harness: Harness) -> None:
    fine = await consume(harness, "f1", amount="2.5")
    assert (fine.status_code, fine.json()["used"]) == (200, "2.5")
    long = await consume(harness, "f2", amount="123456789.123456789012")
    body = assert_problem(long, 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/amount"
    other = await consume(harness, "f1", customer="bob")
    assert_problem(other, 422, "idempotency_key_reused")
    metered = await harness.get("/v1/customers/ada/usage", params={"meter": "ai_tokens"})
    assert metered.json()["buckets"][0]["value"] == "2.5"


async def test_one_batch_draws_each_event_from_the_buckets_live_when_it_happened(
    harness: Harness,
) -> None:
    """A late batch spans a top-up's end and a month's end: each event is drawn from the
    buckets live at its own instant, in time order, whatever the order in the batch."""
    harness.clock.travel_to(harness.clock.now().replace(month=6, day=30, hour=23, minute=0))
    june = harness.clock.now()
    await grant(
        harness, "ada", feature="ai.tokens", value=5000, ends_at=june + timedelta(minutes=30)
    )
    harness.clock.travel_to(june + timedelta(minutes=90))  # 00:30 on July 1st

    def event(key: str, minutes: int, tokens: int) -> dict[str, Any]:
        return {
            "idempotency_key": key,
            "customer": "ada",
            "type": "ai.tokens",
            "timestamp": (june + timedelta(minutes=minutes)).isoformat(),
            "properties": {"tokens": tokens, "model": "gpt-4o"},
        }

    reported = await harness.post(
        "/v1/events",
        [
            event("july", 70, 12000),  # July: 10,000 of its allowance, 2,000 over
            event("after-top-up", 40, 7000),  # June's allowance: the top-up has ended
            event("first", 10, 1000),  # the top-up, which ends first
            event("second", 20, 1000),  # the top-up
        ],
    )
    assert reported.json()["accepted"] == 4, reported.text
    assert (await quota_usage(harness))["used"] == "12000"
    assert (await quota_usage(harness))["overage"] == "2000"
    harness.clock.travel_to(june + timedelta(minutes=50))  # June, after the top-up ended
    june_standing = await quota_usage(harness)
    assert (june_standing["used"], june_standing["remaining"]) == ("7000", "3000")
    harness.clock.travel_to(june + timedelta(minutes=25))  # June, the top-up still live
    assert (await quota_usage(harness))["used"] == "9000"  # 2,000 top-up + 7,000 June
    overages = (await harness.get("/v1/audit/events", params={"type": "QuotaExceeded"})).json()
    assert [e["data"]["overage"] for e in overages["events"]] == ["2000"]


async def test_a_batch_over_several_quotas_chains_one_entry_per_customer(
    harness: Harness,
) -> None:
    batch = [
        {
            "idempotency_key": f"{customer}-{i}",
            "customer": customer,
            "type": "ai.tokens",
            "properties": {"tokens": 6000, "model": "gpt-4o"},
        }
        for customer in ("ada", "bo", "cy")
        for i in range(2)
    ]
    assert (await harness.post("/v1/events", batch)).json()["accepted"] == 6
    found = (await harness.get("/v1/audit/events", params={"type": "QuotaExceeded"})).json()
    assert sorted((e["data"]["customer"], e["data"]["overage"]) for e in found["events"]) == [
        ("ada", "2000"),
        ("bo", "2000"),
        ("cy", "2000"),
    ]
    verified = (await harness.get("/v1/audit/verify")).json()
    assert verified["ok"] is True, verified


@postgresql_only
async def test_parallel_retries_are_recorded_once_and_answered_alike(harness: Harness) -> None:
    """64 consumes at once, each key sent twice, over 8 customers: they are recorded
    together (group commit), and a retry in the same batch as its first is a replay."""
    keys = [(f"k{i}", f"c{i % 8}") for i in range(32)]
    answers = await asyncio.gather(
        *(consume(harness, key, amount=10, customer=customer) for key, customer in keys * 2)
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    by_key: dict[str, set[str]] = {}
    for (key, _customer), answer in zip(keys * 2, answers, strict=True):
        by_key.setdefault(key, set()).add(answer.json()["event_id"])
    assert all(len(ids) == 1 for ids in by_key.values())  # one event per key
    assert sum(a.json()["replayed"] for a in answers) == 32
    for customer in {c for _k, c in keys}:
        assert (await quota_usage(harness, customer))["used"] == "40"  # 4 keys x 10
    metrics = (await harness.client.get("/metrics")).text
    batches = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("billfold_consume_batch_size_count")
    )
    assert batches < 64  # some consumes shared a transaction


async def test_a_consume_answers_exactly_what_openapi_promises(harness: Harness) -> None:
    """Consume answers from plain data (a hot route); it must still be a `ConsumeOut`."""
    from billfold.metering.schemas import ConsumeOut

    body = (await consume(harness, "shape", amount="2.5")).json()
    assert list(body) == list(ConsumeOut.model_fields)
    ConsumeOut.model_validate(body)
    assert (body["amount"], body["remaining"], body["resets_at"]) == (
        "2.5",
        "9997.5",
        "2026-07-01T00:00:00Z",
    )
