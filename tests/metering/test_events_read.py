"""GET /v1/events: the stored usage events, filtered, in (timestamp, id) order, a page at a
time, never another tenant's."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import pytest

from billfold.tenants.scopes import Scope
from tests import factories
from tests.conftest import Harness, assert_problem, new_harness

pytestmark = pytest.mark.anyio


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def read(harness: Harness, **params: Any) -> dict[str, Any]:
    response = await harness.get("/v1/events", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def read_all(harness: Harness, **params: Any) -> list[dict[str, Any]]:
    """Every page, following `next_cursor`."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1_000):
        page = await read(harness, **params, **({"cursor": cursor} if cursor else {}))
        seen += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the pages never end")


async def test_an_event_is_answered_as_stored(harness: Harness) -> None:
    moment = harness.clock.now() - timedelta(hours=1)
    response = await harness.post(
        "/v1/events",
        {
            "idempotency_key": "k-1",
            "customer": "ada",
            "type": "ai.tokens",
            "service": "ai-runtime",
            "correlation_id": "req-7",
            "timestamp": iso(moment),
            "properties": {"tokens": 1200, "model": "gpt-4o", "ratio": 0.25},
        },
    )
    assert response.status_code == 200, response.text
    event_id = response.json()["results"][0]["id"]
    assert (await read(harness))["events"] == [
        {
            "id": event_id,
            "idempotency_key": "k-1",
            "customer": "ada",
            "type": "ai.tokens",
            "service": "ai-runtime",
            "correlation_id": "req-7",
            "timestamp": iso(moment),
            "received_at": iso(harness.clock.now()),
            "properties": {"tokens": 1200, "model": "gpt-4o", "ratio": 0.25},
        }
    ]


async def test_filters_by_customer_type_time_and_correlation(harness: Harness) -> None:
    now = harness.clock.now()
    hour = timedelta(hours=1)
    await factories.events(harness, "ada", "ai.tokens", count=2, at=now - 3 * hour, tokens=1)
    await factories.events(harness, "ada", "space.created", count=1, at=now - 2 * hour)
    await factories.events(harness, "bo", "ai.tokens", count=3, at=now - 2 * hour, tokens=1)
    await factories.events(harness, "ada", "ai.tokens", count=1, at=now - hour, tokens=5)
    body = {"idempotency_key": "c-1", "customer": "bo", "type": "space.created"}
    await harness.post("/v1/events", body, headers={**harness.admin})
    tagged = {**body, "idempotency_key": "c-2", "correlation_id": "req-9"}
    await harness.post("/v1/events", tagged)

    everything = await read_all(harness)
    assert len(everything) == 9
    assert [(e["timestamp"], e["id"]) for e in everything] == sorted(
        (e["timestamp"], e["id"]) for e in everything
    )
    ada = await read_all(harness, customer="ada")
    assert [(e["type"], e["properties"]) for e in ada] == [
        ("ai.tokens", {"tokens": 1}),
        ("ai.tokens", {"tokens": 1}),
        ("space.created", {}),
        ("ai.tokens", {"tokens": 5}),
    ]
    tokens = await read_all(harness, customer="ada", type="ai.tokens")
    assert len(tokens) == 3
    both = await read_all(harness, type=["space.created", "ai.tokens"])
    assert len(both) == 9
    # [from, to): an event exactly at `from` is in, one exactly at `to` is not.
    window = await read_all(harness, **{"from": iso(now - 2 * hour), "to": iso(now - hour)})
    assert {(e["customer"], e["type"]) for e in window} == {
        ("ada", "space.created"),
        ("bo", "ai.tokens"),
    }
    assert len(window) == 4
    offset = await read_all(harness, **{"from": (now - 2 * hour).isoformat()[:19] + "+01:00"})
    assert len(offset) == 9  # that wall time at +01:00 is `now - 3h` in UTC: all are after
    tagged_only = await read_all(harness, correlation_id="req-9")
    assert [e["idempotency_key"] for e in tagged_only] == ["c-2"]
    assert await read_all(harness, customer="nobody") == []


async def test_pages_cover_every_event_once_in_order(harness: Harness) -> None:
    now = harness.clock.now()
    # Many events share one timestamp: the id breaks the tie, so no page boundary
    # repeats or skips one.
    await factories.events(harness, "ada", "ai.tokens", count=7, at=now - timedelta(hours=2))
    await factories.events(harness, "ada", "ai.tokens", count=5, at=now - timedelta(hours=3))
    await factories.events(harness, "ada", "ai.tokens", count=6)
    everything = (await read(harness, limit=500))["events"]
    assert len(everything) == 18
    for size in (1, 4, 7, 17, 18):
        paged = await read_all(harness, limit=size)
        assert [e["id"] for e in paged] == [e["id"] for e in everything]
    # An event stored between two pages, later than the cursor, is on a later page.
    first = await read(harness, limit=10)
    await factories.events(harness, "ada", "ai.tokens", count=1)
    rest: list[dict[str, Any]] = []
    cursor = first["next_cursor"]
    while cursor:
        page = await read(harness, limit=4, cursor=cursor)
        rest += page["events"]
        cursor = page["next_cursor"]
    ids = [e["id"] for e in first["events"] + rest]
    assert len(ids) == len(set(ids)) == 19


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        "bm90IGEgY3Vyc29y",  # "not a cursor"
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00 use_abc").decode().rstrip("="),
        base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00 grt_abc").decode().rstrip("="),
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
    ],
)
async def test_a_bad_cursor_is_refused(harness: Harness, cursor: str) -> None:
    response = await harness.get("/v1/events", params={"cursor": cursor})
    body = assert_problem(response, 422, "invalid_input")
    assert body["errors"][0]["parameter"] == "cursor"


async def test_bad_parameters_are_refused(harness: Harness) -> None:
    now = harness.clock.now()
    backwards = {"from": iso(now), "to": iso(now - timedelta(hours=1))}
    assert_problem(await harness.get("/v1/events", params=backwards), 422, "invalid_input")
    naive = {"from": "2026-01-01T00:00:00"}
    assert (await harness.get("/v1/events", params=naive)).status_code == 422
    for limit in (0, 501):
        response = await harness.get("/v1/events", params={"limit": limit})
        assert response.status_code == 422
    spaced = {"customer": "a b"}
    assert_problem(await harness.get("/v1/events", params=spaced), 422, "invalid_input")
    unix = {"from": "1780000000"}  # instants are ISO 8601 with a zone, never Unix seconds
    assert_problem(await harness.get("/v1/events", params=unix), 422, "invalid_input")
    for text in ({"customer": "a\x00"}, {"correlation_id": "\x00"}, {"type": "x\x00"}):
        assert_problem(await harness.get("/v1/events", params=text), 422, "invalid_input")


async def test_another_tenants_events_are_never_read(harness: Harness, database_url: str) -> None:
    other = await new_harness(database_url)
    try:
        await factories.events(other, "ada", "ai.tokens", count=3, tokens=1)
        await factories.events(harness, "ada", "ai.tokens", count=2, tokens=1)
        theirs = await read_all(other)
        assert len(theirs) == 3
        ours = await read_all(harness)
        assert len(ours) == 2
        assert not {e["id"] for e in ours} & {e["id"] for e in theirs}
        # Their cursor, used with our key, pages through ours only.
        cursor = (await read(other, limit=1))["next_cursor"]
        paged = (await read(harness, cursor=cursor))["events"]
        assert {e["id"] for e in paged} <= {e["id"] for e in ours}
    finally:
        await other.client.aclose()
        await other.database.dispose()


async def test_every_scope_may_read_and_no_key_may_not(harness: Harness) -> None:
    await factories.events(harness, "ada", "ai.tokens", count=1, tokens=1)
    # Raw events are usage, read as usage reports are: with the `read` permission,
    # which every scope holds.
    for scope in Scope:
        response = await harness.get("/v1/events", headers=await harness.key(scope))
        assert response.status_code == 200, (scope, response.text)
        assert len(response.json()["events"]) == 1
    assert_problem(await harness.get("/v1/events", headers={}), 401, "unauthenticated")
    bad = {"Authorization": "Bearer bf_not_a_key"}
    assert_problem(await harness.get("/v1/events", headers=bad), 401, "unauthenticated")
