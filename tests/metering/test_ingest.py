"""Usage events in (JSON and CloudEvents), meters out: exact, idempotent, append-only."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import PLANS, Harness, assert_problem, postgresql_only
from tests.factories import check, events

pytestmark = pytest.mark.anyio

EVENTS = "/v1/events"
CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"


def event(key: str, customer: str = "ada", tokens: Any = 100, **extra: Any) -> dict[str, Any]:
    properties = {"tokens": tokens, "model": extra.pop("model", "gpt-4o")}
    return {
        "idempotency_key": key,
        "customer": customer,
        "type": "ai.tokens",
        **extra,
        "properties": properties,
    }


async def report(
    harness: Harness, body: Any, media_type: str = "application/json"
) -> httpx.Response:
    # A number a float cannot hold goes in as text, marked "DIGITS:<number>".
    content = re.sub(r'"DIGITS:([0-9.]+)"', r"\1", json.dumps(body))
    return await harness.client.post(
        EVENTS, content=content, headers={**harness.admin, "Content-Type": media_type}
    )


async def usage(harness: Harness, customer: str = "ada", **params: Any) -> dict[str, Any]:
    response = await harness.get(
        f"/v1/customers/{customer}/usage", params={"meter": "ai_tokens", **params}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_one_event_is_accepted_and_counted(harness: Harness) -> None:
    response = await report(harness, event("k1", tokens=1200))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 0, 0)
    assert body["results"][0]["status"] == "accepted"
    assert body["results"][0]["id"].startswith("use_")
    total = await usage(harness)
    assert [b["value"] for b in total["buckets"]] == ["1200"]


async def test_a_retry_is_a_duplicate_and_counts_once(harness: Harness) -> None:
    first = (await report(harness, event("k1", tokens=5))).json()
    again = (await report(harness, [event("k1", tokens=5), event("k1", tokens=5)])).json()
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert again["results"][0]["id"] == first["results"][0]["id"]
    assert (await usage(harness))["buckets"][0]["value"] == "5"


async def test_a_bad_event_never_loses_the_good_ones(harness: Harness) -> None:
    now = harness.clock.now()
    batch = [
        event("good-1", tokens=10),
        {"customer": "ada", "type": "ai.tokens"},  # no key
        event("old", timestamp=(now - timedelta(days=30)).isoformat()),
        event("ahead", timestamp=(now + timedelta(hours=1)).isoformat()),
        event("good-1", tokens=10),  # the same key twice in one batch
        event("exact", tokens="DIGITS:0.1234567890123456789"),
        event("good-2", tokens=2.5),
        "not an object",
    ]
    body = (await report(harness, batch)).json()
    assert [(r["status"], r.get("code")) for r in body["results"]] == [
        ("accepted", None),
        ("rejected", "invalid_event"),
        ("rejected", "event_too_old"),
        ("rejected", "event_in_future"),
        ("duplicate", None),
        ("rejected", "invalid_event"),
        ("accepted", None),
        ("rejected", "invalid_event"),
    ]
    assert "idempotency_key" in body["results"][1]["reason"]
    assert "late window (7 days)" in body["results"][2]["reason"]
    assert (await usage(harness))["buckets"][0]["value"] == "12.5"


async def test_all_rejected_is_a_422_with_every_reason(harness: Harness) -> None:
    body = assert_problem(await report(harness, [{"type": "x"}, {}]), 422, "events_rejected")
    assert len(body["results"]) == 2


@pytest.mark.parametrize(
    ("content", "media_type", "status", "code"),
    [
        ("{", "application/json", 400, "unreadable_events"),
        ("[]", "application/json", 400, "unreadable_events"),
        ("{}", "text/plain", 415, "unsupported_media_type"),
        ("[]", CE, 400, "unreadable_events"),
        ("{}", CE_BATCH, 400, "unreadable_events"),
    ],
)
async def test_unreadable_bodies(
    harness: Harness, content: str, media_type: str, status: int, code: str
) -> None:
    response = await harness.client.post(
        EVENTS, content=content, headers={**harness.admin, "Content-Type": media_type}
    )
    assert_problem(response, status, code)


async def test_a_batch_holds_at_most_10000(harness: Harness) -> None:
    batch = [event(f"k{i}") for i in range(10_001)]
    assert_problem(await report(harness, batch), 400, "unreadable_events")


async def test_cloudevents_map_onto_usage_events(harness: Harness) -> None:
    cloudevent = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "ai-runtime",
        "subject": "bea",
        "type": "ai.tokens",
        "time": harness.clock.now().isoformat(),
        "correlationid": "req-9",
        "data": {"tokens": 300, "model": "o3"},
    }
    single = (await report(harness, cloudevent, CE)).json()
    assert single["accepted"] == 1
    batch = (
        await report(
            harness, [cloudevent, {**cloudevent, "id": "ce-2", "data": {"tokens": 1}}], CE_BATCH
        )
    ).json()
    assert [r["status"] for r in batch["results"]] == ["duplicate", "accepted"]
    missing = (
        await report(harness, [{**cloudevent, "id": "ce-3", "source": None}, cloudevent], CE_BATCH)
    ).json()
    assert missing["results"][0]["reason"] == "source: required by CloudEvents"
    grouped = await usage(harness, "bea", group_by="model")
    assert [(b["group"], b["value"]) for b in grouped["buckets"]] == [
        ({"model": None}, "1"),
        ({"model": "o3"}, "300"),
    ]


async def test_windows_and_groups(harness: Harness) -> None:
    start = harness.clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    await report(
        harness,
        [
            event("a", tokens=1, model="m1", timestamp=(start - timedelta(hours=20)).isoformat()),
            event("b", tokens=2, model="m1", timestamp=(start + timedelta(hours=1)).isoformat()),
            event("c", tokens=4, model="m2", timestamp=(start + timedelta(hours=2)).isoformat()),
        ],
    )
    since = (start - timedelta(days=1)).isoformat()
    daily = await usage(harness, **{"from": since, "window": "day"})
    assert [(b["start"][:10], b["value"]) for b in daily["buckets"]] == [
        ((start - timedelta(days=1)).date().isoformat(), "1"),
        (start.date().isoformat(), "6"),
    ]
    by_model = await usage(harness, **{"from": since, "group_by": "model"})
    assert [(b["group"]["model"], b["value"], b["events"]) for b in by_model["buckets"]] == [
        ("m1", "3", 2),
        ("m2", "4", 1),
    ]
    bad = await harness.get(
        "/v1/customers/ada/usage", params={"meter": "ai_tokens", "group_by": "colour"}
    )
    assert_problem(bad, 422, "invalid_input")
    unknown = await harness.get("/v1/customers/ada/usage", params={"meter": "nope"})
    assert_problem(unknown, 404, "meter_not_found")


async def test_usage_events_are_append_only(harness: Harness) -> None:
    from sqlalchemy import text

    await report(harness, event("k1"))
    for statement in ("UPDATE usage_events SET customer = 'x'", "DELETE FROM usage_events"):
        with pytest.raises(Exception, match="append-only"):
            async with harness.database.transaction() as session:
                await session.execute(text(statement))


@postgresql_only
async def test_racing_retries_count_once(harness: Harness) -> None:
    batch = [event(f"race-{i}", tokens=1) for i in range(50)]
    answers = await asyncio.gather(*(report(harness, batch) for _ in range(16)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    accepted = sum(a.json()["accepted"] for a in answers)
    assert accepted == 50
    assert (await usage(harness))["buckets"][0]["value"] == "50"


METERS = """
  calls: {event: api.call, aggregation: count, filters: {status: {in: [200, 201]}}}
  bytes: {event: api.call, aggregation: sum, property: bytes, filters: {route: {equals: /x}}}
  peak: {event: api.call, aggregation: max, property: bytes}
  users: {event: api.call, aggregation: unique_count, property: user}
  last: {event: api.call, aggregation: latest, property: bytes}
"""


async def test_every_aggregation_is_exact(harness: Harness) -> None:
    await harness.apply_plans(PLANS.read_text().replace("meters:\n", "meters:\n" + METERS))
    now = harness.clock.now()
    calls = [
        ("c1", {"status": 200, "route": "/x", "bytes": 0.1, "user": "u1"}, 3),
        ("c2", {"status": 201, "route": "/x", "bytes": 0.2, "user": "u2"}, 2),
        ("c3", {"status": 500, "route": "/y", "bytes": 7, "user": "u1"}, 1),
    ]
    body = [
        {
            "idempotency_key": key,
            "customer": "cal",
            "type": "api.call",
            "timestamp": (now - timedelta(minutes=minutes)).isoformat(),
            "properties": properties,
        }
        for key, properties, minutes in calls
    ]
    assert (await report(harness, body)).json()["accepted"] == 3
    values = {}
    for meter in ("calls", "bytes", "peak", "users", "last"):
        values[meter] = (await usage(harness, "cal", meter=meter))["buckets"][0]["value"]
    assert values == {"calls": "2", "bytes": "0.3", "peak": "7", "users": "2", "last": "7"}


async def test_a_limit_backed_by_a_gauge_needs_no_current(harness: Harness) -> None:
    """spaces.max counts space.created minus space.deleted: the product keeps no counter."""
    await events(harness, "gus", "space.created", count=3)
    full = await check(harness, customer="gus", feature="spaces.max")
    assert (full["allowed"], full["remaining"], full["reason"]) == (False, 0, "limit_reached")
    await events(harness, "gus", "space.deleted")
    room = await check(harness, customer="gus", feature="spaces.max")
    assert (room["allowed"], room["remaining"]) == (True, 1)
    gauge = await usage(harness, "gus", meter="spaces")
    assert gauge["buckets"][0]["value"] == "2"
    assert gauge["buckets"][0]["events"] == 4


def test_an_outcome_answers_with_exactly_the_fields_openapi_promises() -> None:
    """`/v1/events` answers outcomes as plain data (10,000 per batch), not models."""
    from billfold.metering.ingest import Outcome
    from billfold.metering.schemas import OutcomeOut

    assert list(Outcome._fields) == list(OutcomeOut.model_fields)


async def test_an_unsupported_events_body_is_the_one_415_problem(harness: Harness) -> None:
    """/v1/events answers 415 with the problem every JSON route answers (http.bodies)."""
    from billfold.http import bodies
    from billfold.metering import api

    assert api.UnsupportedMediaType is bodies.UnsupportedMediaType
    response = await harness.client.post(
        EVENTS, content="{}", headers={**harness.admin, "Content-Type": "text/plain"}
    )
    body = assert_problem(response, 415, "unsupported_media_type")
    assert body["title"] == bodies.UnsupportedMediaType.title


def test_report_usage_documents_the_400_it_answers() -> None:
    from billfold.app import create_app
    from tests.conftest import make_settings

    document = create_app(make_settings("sqlite:///unused.db")).openapi()
    answer = document["paths"][EVENTS]["post"]["responses"]["400"]
    assert "`unreadable_events`" in answer["description"], answer
    assert "malformed_json" not in answer["description"], answer


def _nested(depth: int) -> str:
    """An event nested `depth` levels in all: the event, its properties, then arrays."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return '{"idempotency_key": "deep", "customer": "ada", "type": "ai.tokens", ' + (
        '"properties": {"tokens": 1, "deep": ' + inner + "}}"
    )


@pytest.mark.parametrize(
    ("content", "media_type"),
    [
        (json.dumps(event("u16")).encode("utf-16"), "application/json"),
        (json.dumps(event("u32")).encode("utf-32"), "application/json"),
        (b"\xef\xbb\xbf" + json.dumps(event("bom")).encode(), "application/json"),
        (b"\xef\xbb\xbf" + json.dumps({**event("bom-ce")}).encode(), CE),
        (
            b'{"idempotency_key": "k", "idempotency_key": "k2", "customer": "ada"}',
            "application/json",
        ),
        (b'{"a": 1, "properties": {"tokens": 1, "tokens": 2}}', "application/json"),
        (_nested(201).encode(), "application/json"),
        (_nested(990).encode(), "application/json"),  # near the recursion limit: never a 500
        (b'{"customer": "ada", "bad": "\xff"}', "application/json"),
    ],
)
async def test_an_events_body_is_read_as_strictly_as_every_json_body(
    harness: Harness, content: bytes, media_type: str
) -> None:
    """UTF-8 without a BOM, no key twice, at most MAX_DEPTH deep (decision 0022)."""
    response = await harness.client.post(
        EVENTS, content=content, headers={**harness.admin, "Content-Type": media_type}
    )
    assert_problem(response, 400, "unreadable_events")
    assert (await harness.get("/v1/events")).json()["events"] == []


async def test_an_events_body_in_another_charset_is_refused(harness: Harness) -> None:
    content = json.dumps(event("cs")).encode("utf-16")
    for media_type in ("application/json", CE_BATCH):
        response = await harness.client.post(
            EVENTS,
            content=content,
            headers={**harness.admin, "Content-Type": f"{media_type}; charset=utf-16"},
        )
        assert_problem(response, 415, "unsupported_media_type")
    fine = await harness.client.post(
        EVENTS,
        content=json.dumps(event("cs")),
        headers={**harness.admin, "Content-Type": "application/json; charset=UTF-8"},
    )
    assert fine.status_code == 200, fine.text


async def test_nesting_up_to_max_depth_is_read(harness: Harness) -> None:
    response = await harness.client.post(
        EVENTS, content=_nested(200), headers={**harness.admin, "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
