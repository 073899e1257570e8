"""The event log: written with every change, append-only, hash-chained, filterable."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def seed(harness: Harness) -> None:
    await harness.post("/v1/customers/amy/grants", {"feature": "rag.enabled", "value": True})
    harness.clock.advance(timedelta(minutes=1))
    await harness.post("/v1/customers/bo/subscriptions", {"plan": "pro", "billing": "external"})
    harness.clock.advance(timedelta(minutes=1))
    await harness.post("/v1/customers/amy/grants", {"feature": "spaces.max", "value": 9})


async def test_entries_name_actor_customer_correlation_and_time(harness: Harness) -> None:
    response = await harness.post(
        "/v1/customers/amy/grants",
        {"feature": "rag.enabled", "value": True},
        headers={**harness.admin, "X-Correlation-Id": "req-42"},
    )
    assert response.headers["x-correlation-id"] == "req-42"
    events = (await harness.get("/v1/audit/events", params={"customer": "amy"})).json()["events"]
    assert len(events) == 1
    entry = events[0]
    assert entry["type"] == "EntitlementGranted"
    assert entry["customer"] == "amy"
    assert entry["correlation_id"] == "req-42"
    assert entry["actor"]["kind"] == "api_key"
    assert entry["actor"]["scope"] == "admin"
    assert entry["actor"]["id"].startswith("key_")
    assert entry["occurred_at"] == harness.clock.now().isoformat().replace("+00:00", "Z")
    assert entry["data"] == {
        "grant_id": response.json()["id"],
        "key": "rag.enabled",
        "value": True,
        "source": "admin",
        "plan": None,
        "starts_at": harness.clock.now().isoformat(),
        "ends_at": None,
    }


async def test_filters_and_cursor_pagination(harness: Harness) -> None:
    start = harness.clock.now()
    await seed(harness)
    by_type = await harness.get("/v1/audit/events", params={"type": "SubscriptionActivated"})
    assert [e["customer"] for e in by_type.json()["events"]] == ["bo"]
    since = await harness.get(
        "/v1/audit/events",
        params={"customer": "amy", "since": (start + timedelta(seconds=30)).isoformat()},
    )
    assert [e["data"]["key"] for e in since.json()["events"]] == ["spaces.max"]

    seen: list[int] = []
    cursor = None
    for _ in range(20):
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await harness.get("/v1/audit/events", params=params)).json()
        seen += [event["seq"] for event in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    everything = (await harness.get("/v1/audit/events", params={"limit": 500})).json()["events"]
    assert seen == [event["seq"] for event in everything] == list(range(1, len(everything) + 1))


async def test_events_of_an_unknown_customer_are_empty(harness: Harness) -> None:
    response = await harness.get("/v1/audit/events", params={"customer": "ghost"})
    assert response.json() == {"events": [], "next_cursor": None}


async def test_update_and_delete_are_refused_by_the_database(harness: Harness) -> None:
    await seed(harness)
    for statement in (
        "UPDATE event_log SET type = 'Forged' WHERE tenant_id = :t",
        "DELETE FROM event_log WHERE tenant_id = :t",
    ):
        async with harness.database.transaction() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement), {"t": harness.tenant_id})


Tamper = Callable[[AsyncSession, str], Awaitable[None]]


async def without_guard(session: AsyncSession, backend: str, statements: list[str], t: str) -> None:
    """Run statements with the append-only triggers lifted, inside the caller's transaction."""
    if backend == "postgresql":
        await session.execute(text("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only"))
    else:
        await session.execute(text("DROP TRIGGER event_log_no_update"))
        await session.execute(text("DROP TRIGGER event_log_no_delete"))
    for statement in statements:
        await session.execute(text(statement), {"t": t})


@pytest.mark.parametrize(
    ("statements", "seq", "problem"),
    [
        (
            ['UPDATE event_log SET data = \'{"key": "forged"}\' WHERE tenant_id = :t AND seq = 3'],
            3,
            "edited",
        ),
        (["DELETE FROM event_log WHERE tenant_id = :t AND seq = 4"], 4, "deleted"),
        (
            [
                "UPDATE event_log SET seq = -1 WHERE tenant_id = :t AND seq = 2",
                "UPDATE event_log SET seq = 2 WHERE tenant_id = :t AND seq = 5",
                "UPDATE event_log SET seq = 5 WHERE tenant_id = :t AND seq = -1",
            ],
            2,
            "reordered",
        ),
        (["DELETE FROM event_log WHERE tenant_id = :t AND seq = 13"], 13, "deleted"),
    ],
    ids=["edited", "deleted", "reordered", "tail-deleted"],
)
async def test_verify_names_the_first_broken_entry(
    harness: Harness, statements: list[str], seq: int, problem: str
) -> None:
    await seed(harness)
    async with harness.database.transaction(write=False) as session:
        intact = await audit.verify(session, harness.tenant_id)
    # the key, the catalog, 1 grant, 7 grants + 1 activation, 1 grant
    assert (intact.ok, intact.entries) == (True, 13)
    async with harness.database.transaction() as session:
        await without_guard(session, harness.backend, statements, harness.tenant_id)
        broken = await audit.verify(session, harness.tenant_id)
        await session.rollback()
    assert (broken.ok, broken.seq) == (False, seq)
    assert broken.problem is not None
    assert broken.problem.startswith(problem)


async def test_each_tenant_has_its_own_chain(harness: Harness, database_url: str) -> None:
    from tests.conftest import new_harness

    other = await new_harness(database_url)
    try:
        await seed(harness)
        await other.post("/v1/customers/amy/grants", {"plan": "pro"})
        mine = (await harness.get("/v1/audit/verify")).json()
        theirs = (await other.get("/v1/audit/verify")).json()
        assert mine == {"ok": True, "entries": 13, "problem": None, "seq": None}
        assert theirs == {"ok": True, "entries": 10, "problem": None, "seq": None}
        foreign = (await other.get("/v1/audit/events", params={"customer": "bo"})).json()
        assert foreign["events"] == []
    finally:
        await other.client.aclose()
        await other.database.dispose()
