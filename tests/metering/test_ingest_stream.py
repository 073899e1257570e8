"""BILLFOLD_INGEST: the API appends usage to NATS JetStream and workers drain it.

The workers are real `billfold worker ingest` processes. One is killed with SIGKILL in
the middle of its work and restarted, and every event is still stored exactly once.
PostgreSQL only: several processes write at once, which is the platform setup."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats import errors as nats_errors
from sqlalchemy import text

from billfold.metering.deps import Metering
from billfold.metering.stream import next_batch
from tests.conftest import ROOT, Harness, new_harness, postgresql_only

pytestmark = pytest.mark.anyio

BILLFOLD = ROOT / ".venv" / "bin" / "billfold"
BATCHES, PER_BATCH = 20, 250


@pytest.fixture
async def streaming(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    stream = f"BILLFOLD_TEST_{secrets.token_hex(4).upper()}"
    built = await new_harness(database_url, ingest=nats_url, ingest_stream=stream)
    try:
        yield built
    finally:
        await built.app.state.runtime.collaborators[Metering].publisher.close()
        await built.client.aclose()
        await built.database.dispose()
        import nats

        client = await nats.connect(nats_url)
        try:
            await client.jetstream().delete_stream(stream)
        finally:
            await client.close()


def worker(harness: Harness, batch: int = 2) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env.update(
        BILLFOLD_DATABASE_URL=harness.settings.database_url,
        BILLFOLD_SECRET_KEY=harness.settings.secret_key.decode(),
        BILLFOLD_INGEST=harness.settings.ingest,
        BILLFOLD_INGEST_STREAM=harness.settings.ingest_stream,
    )
    return subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), "worker", "ingest", "--batch", str(batch)],
        env=env,
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
