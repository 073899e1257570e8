"""BILLFOLD_INGEST: the API appends usage to NATS JetStream and workers drain it.

The workers are real `billfold worker ingest` processes. One is killed with SIGKILL in
the middle of its work and restarted, and every event is still stored exactly once.
PostgreSQL only: several processes write at once, which is the platform setup."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time
from typing import Any

import pytest
from nats import errors as nats_errors
from sqlalchemy import text

from billfold.kit.text import NUL
from billfold.metering import deadletters
from billfold.metering.stream import (
    WorkerOptions,
    _ensure_stream,
    _subject,
    decode,
    next_batch,
    store,
)
from tests.conftest import ROOT, Harness, postgresql_only

pytestmark = pytest.mark.anyio

BILLFOLD = ROOT / ".venv" / "bin" / "billfold"
BATCHES, PER_BATCH = 20, 250


def env_of(harness: Harness) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env.update(
        BILLFOLD_DATABASE_URL=harness.settings.database_url,
        BILLFOLD_SECRET_KEY=harness.settings.secret_key.decode(),
        BILLFOLD_INGEST=harness.settings.ingest,
        BILLFOLD_INGEST_STREAM=harness.settings.ingest_stream,
    )
    return env


def worker(harness: Harness, batch: int = 2, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), "worker", "ingest", "--batch", str(batch), *extra],
        env=env_of(harness),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def started(process: subprocess.Popen[str]) -> None:
    """Wait for the worker's first line: its signal handlers are in place by then."""
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    assert "draining" in line, line


async def stored(harness: Harness) -> tuple[int, int]:
    async with harness.database.transaction() as session:
        row = (
            await session.execute(
                text(
                    "SELECT count(*), count(DISTINCT idempotency_key) FROM usage_events "
                    "WHERE tenant_id = :t"
                ),
                {"t": harness.tenant_id},
            )
        ).one()
    return int(row[0]), int(row[1])


async def wait_for(harness: Harness, goal: int, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count, _distinct = await stored(harness)
        if count >= goal:
            return count
        await asyncio.sleep(0.2)
    return count


def batch(number: int) -> list[dict[str, Any]]:
    return [
        {
            "idempotency_key": f"s{number}-{i}",
            "customer": f"c{i % 10}",
            "type": "ai.tokens",
            "properties": {"tokens": 1, "model": "gpt-4o"},
        }
        for i in range(PER_BATCH)
    ]


@postgresql_only
async def test_a_killed_worker_loses_nothing_and_stores_nothing_twice(
    streaming: Harness,
) -> None:
    for number in range(BATCHES):
        answer = await streaming.post("/v1/events", batch(number))
        assert answer.status_code == 200, answer.text
        assert answer.json()["queued"] is True
    # A retried request is answered again and stored once.
    assert (await streaming.post("/v1/events", batch(0))).json()["queued"] is True
    assert await stored(streaming) == (0, 0)  # nothing is written until a worker runs

    first = worker(streaming, batch=1)
    partial = await wait_for(streaming, 1, 30)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    assert 0 < partial < BATCHES * PER_BATCH, partial

    second, third = worker(streaming), worker(streaming)  # several at once
    try:
        for process in (second, third):
            await started(process)
        total = await wait_for(streaming, BATCHES * PER_BATCH, 60)
        await asyncio.sleep(1.0)  # let a wrongly duplicated write show up
        assert await stored(streaming) == (BATCHES * PER_BATCH, BATCHES * PER_BATCH), total
    finally:
        for process in (second, third):
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
            assert process.returncode == 0, output
            assert "stopped after" in output, output
    # The quota drew every token once: 10 customers x 500 tokens.
    entitlements = await streaming.get("/v1/customers/c3/entitlements")
    assert entitlements.json()["entitlements"]["ai.tokens"]["usage"]["used"] == "500"


class _Lapsed:
    """A pull subscription whose deadline lapsed between nats-py's two pull requests.

    nats-py then raises asyncio's TimeoutError, not its own subclass. That cannot be
    timed from outside, so this stand-in for the library's object raises it directly."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def fetch(self, batch: int, timeout: float) -> list[Any]:  # noqa: ASYNC109 (the library's signature)
        raise self.error


@pytest.mark.parametrize(
    "error", [TimeoutError(), nats_errors.TimeoutError()], ids=["builtin", "nats"]
)
async def test_a_quiet_stream_is_an_empty_batch_whichever_timeout_nats_raises(
    error: BaseException,
) -> None:
    assert await next_batch(_Lapsed(error), 10) == []  # type: ignore[arg-type]


async def test_an_empty_stream_gives_an_empty_batch(nats_url: str) -> None:
    import nats

    stream = f"BILLFOLD_TEST_{secrets.token_hex(4).upper()}"
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await js.add_stream(name=stream, subjects=[f"quiet.{stream.lower()}"])
        subscription = await js.pull_subscribe(f"quiet.{stream.lower()}", durable="q")
        for _ in range(3):
            assert await next_batch(subscription, 10) == []
        await js.delete_stream(stream)
    finally:
        await client.close()


# --- poison: what the store refuses is parked, and the worker goes on -------------------


def good_event(key: str) -> dict[str, Any]:
    return {
        "idempotency_key": key,
        "customer": "poisoned",
        "type": "ai.tokens",
        "properties": {"tokens": 1, "model": "gpt-4o"},
    }


def message(harness: Harness, events: list[dict[str, Any]]) -> bytes:
    """A message as the API would queue it, built by hand: nothing checked its text."""
    body = {
        "tenant_id": harness.tenant_id,
        "received_at": harness.clock.now().isoformat(),
        "correlation_id": "poison-test",
        "events": events,
    }
    return json.dumps(body).encode()  # a lone surrogate goes out as the JSON escape \\ud800


async def publish_raw(harness: Harness, payloads: list[bytes]) -> None:
    """Publish straight to the stream's subject, past the API and its checks."""
    import nats

    client = await nats.connect(harness.settings.ingest)
    try:
        js = client.jetstream()
        await _ensure_stream(js, harness.settings.ingest_stream)
        subject = f"{_subject(harness.settings.ingest_stream)}.{harness.tenant_id}"
        for payload in payloads:
            await js.publish(subject, payload, timeout=10)
    finally:
        await client.close()


async def dead_letters(harness: Harness) -> list[Any]:
    async with harness.database.transaction(write=False) as session:
        rows = await deadletters.listing(session, limit=100)
    return [row for row in rows if row.tenant_id in (harness.tenant_id, None)]


def scrape(port: int) -> str:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def billfold(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), *args],
        env=env_of(harness),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_a_poisoned_message_is_parked_and_the_worker_goes_on(streaming: Harness) -> None:
    """Before: the worker died on the database's refusal, the message came back every
    15 s, and its good events were never stored."""
    from tests.cli.test_cli import free_port

    poisoned = [
        good_event("p-1"),
        {**good_event("p-nul"), "customer": f"ada{NUL}"},
        {**good_event("p-surrogate"), "properties": {"tokens": 1, "model": "gpt\ud800"}},
        {**good_event("p-time"), "timestamp": "yesterday"},
        good_event("p-2"),
    ]
    await publish_raw(streaming, [message(streaming, poisoned), b"\xff\xfenot json"])
    port = free_port()
    process = worker(streaming, 10, "--metrics-port", str(port))
    try:
        await started(process)
        assert await wait_for(streaming, 2, 30) == 2
        # Still consuming: the next message is stored too.
        await publish_raw(streaming, [message(streaming, [good_event("after")])])
        assert await wait_for(streaming, 3, 30) == 3
        letters = await dead_letters(streaming)
        assert sorted((row.kind, row.idempotency_key) for row in letters) == [
            ("event", "p-nul"),
            ("event", "p-surrogate"),
            ("event", "p-time"),
            ("message", None),
        ]
        errors = {row.idempotency_key: row.error for row in letters}
        assert errors["p-nul"] == "/customer contains a NUL character (\\u0000)"
        assert "lone UTF-16 surrogate" in errors["p-surrogate"]
        assert errors["p-time"].startswith("malformed event: ValueError")
        assert errors[None].startswith("undecodable message")
        assert all(row.attempts == 1 for row in letters)
        metrics = await asyncio.to_thread(scrape, port)
        assert 'billfold_ingest_dead_letters_total{kind="event"} 3.0' in metrics, metrics
        assert 'billfold_ingest_dead_letters_total{kind="message"} 1.0' in metrics, metrics
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "parked event p-nul" in output, output
    assert "Traceback" not in output, output

    # The operator replays without fixing anything: every letter stays, one attempt more.
    replayed = await asyncio.to_thread(
        billfold, streaming, "worker", "dead-letters", "replay", "--all"
    )
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert replayed.stdout.count(": parked") >= 4, replayed.stdout
    again = await dead_letters(streaming)
    assert {row.id: row.attempts for row in again} == {row.id: 2 for row in letters}
    assert await stored(streaming) == (3, 3)

    listed = await asyncio.to_thread(billfold, streaming, "worker", "dead-letters", "list")
    assert listed.returncode == 0, listed.stderr
    assert "p-surrogate" in listed.stdout
    assert "\\ud800" in listed.stdout  # the event as sent, escaped

    undecodable = next(row for row in again if row.kind == "message")
    dropped = await asyncio.to_thread(
        billfold, streaming, "worker", "dead-letters", "drop", str(undecodable.id)
    )
    assert dropped.returncode == 0, dropped.stderr
    assert len(await dead_letters(streaming)) == 3


async def test_a_replayed_dead_letter_that_now_stores_is_removed(streaming: Harness) -> None:
    """A letter parked for a reason since fixed is stored by replay, once, and removed."""
    letter = deadletters.event_letter(
        tenant_id=streaming.tenant_id,
        message_id="m-1",
        received_at=streaming.clock.now(),
        correlation_id="c",
        raw=good_event("fixed"),
        error="the database refused it once",
    )
    async with streaming.database.transaction() as session:
        await deadletters.park(session, letter, streaming.clock.now())
    (row,) = await dead_letters(streaming)
    replayed = await asyncio.to_thread(
        billfold, streaming, "worker", "dead-letters", "replay", str(row.id)
    )
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.strip() == f"{row.id}: stored"
    assert await dead_letters(streaming) == []
    assert await stored(streaming) == (1, 1)


@postgresql_only  # SQLite does not enforce a column's length; PostgreSQL refuses the key
async def test_an_event_the_database_refuses_is_parked_and_its_neighbours_stored(
    harness: Harness,
) -> None:
    """What the checks let through and the store refuses: the tenant's transaction fails,
    its events are stored one by one, and the one refused is parked with the error."""
    long_key = "k" * 300
    body = json.loads(
        message(harness, [good_event("n-1"), good_event(long_key), good_event("n-2")])
    )
    options = WorkerOptions(url="nats://unused", stream="UNUSED")
    parked = await store(harness.database, [("m-1", body)], options, harness.clock.now())
    assert [letter.idempotency_key for letter in parked] == [long_key[:255]]
    assert parked[0].error.endswith(
        "value too long for type character varying(255) (SQLSTATE 22001)"
    )
    assert await stored(harness) == (2, 2)
    (row,) = await dead_letters(harness)
    assert (row.kind, row.message_id, row.attempts) == ("event", "m-1", 1)


GOOD_BODY = {"tenant_id": "ten_1", "received_at": "2027-01-01T00:00:00+00:00", "events": []}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"a": "\xc3\x28"}', "undecodable message: 'utf-8' codec"),
        (b"{", "undecodable message: Expecting"),
        (b"[]", "undecodable message: not a JSON object"),
        (
            json.dumps({**GOOD_BODY, "tenant_id": "t" * 41}).encode(),
            "undecodable message: no tenant_id",
        ),
        (
            json.dumps({**GOOD_BODY, "tenant_id": "t\u0000"}).encode(),
            "undecodable message: the tenant_id",
        ),
        (
            json.dumps({**GOOD_BODY, "events": {}}).encode(),
            "undecodable message: no list of events",
        ),
        (
            json.dumps({**GOOD_BODY, "received_at": "2027-01-01T00:00:00"}).encode(),
            "undecodable message: no received_at",
        ),
        (
            json.dumps({**GOOD_BODY, "correlation_id": 7}).encode(),
            "undecodable message: correlation_id",
        ),
    ],
    ids=["utf8", "json", "array", "tenant-long", "tenant-nul", "events", "naive", "correlation"],
)
def test_a_message_that_is_no_body_is_named(payload: bytes, reason: str) -> None:
    body, fault = decode(payload)
    assert body is None
    assert fault is not None
    assert fault.startswith(reason), fault


def test_a_body_decodes() -> None:
    assert decode(json.dumps(GOOD_BODY).encode()) == (GOOD_BODY, None)


async def test_a_key_reused_with_another_body_is_dropped_not_parked(harness: Harness) -> None:
    """A client's retry with another body reaches the stream only the API's way round (it
    answered `idempotency_key_reused` already, or raced the first body): the worker drops
    and logs it, counted, and parks nothing for an operator (docs/operating.md)."""
    options = WorkerOptions(url="nats://unused", stream="UNUSED")
    first = json.loads(message(harness, [good_event("r-1")]))
    assert await store(harness.database, [("m-1", first)], options, harness.clock.now()) == []
    other = {**good_event("r-1"), "properties": {"tokens": 5, "model": "gpt-4o"}}
    again = json.loads(message(harness, [other, good_event("r-2")]))
    dropped: list[str] = []
    parked = await store(
        harness.database, [("m-2", again)], options, harness.clock.now(), dropped=dropped
    )
    assert (parked, dropped) == ([], ["idempotency_key_reused"])
    assert await dead_letters(harness) == []
    assert await stored(harness) == (2, 2)  # r-1 once, as first sent; r-2
