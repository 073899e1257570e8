"""The outbox: an entry per committed event-log entry, none for a rolled-back one, and
workers that deliver each exactly once, retry with backoff, park, and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.outbox import ALL_TOPICS, Announcement, Claimed, OutboxSource, prune
from billfold.kit.tables import rate_limit_counters
from billfold.kit.worker import Backoff
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope
from tests.conftest import ROOT, Harness, postgresql_only
from tests.factories import grant, subscription

pytestmark = pytest.mark.anyio


class Failure(Exception):
    pass


async def outbox_rows(harness: Harness) -> list[Any]:
    async with harness.database.transaction(write=False) as session:
        result = await session.execute(
            text(
                "SELECT o.topic, o.event_seq, e.type FROM outbox o JOIN event_log e "
                "ON e.tenant_id = o.tenant_id AND e.seq = o.event_seq "
                "WHERE o.tenant_id = :t ORDER BY o.id"
            ),
            {"t": harness.tenant_id},
        )
        return list(result.all())


async def quiet(harness: Harness) -> None:
    """Arrange: every other test's entries count as delivered, so a worker sees ours."""
    async with harness.database.transaction() as session:
        await session.execute(
            text("UPDATE outbox SET delivered_at = created_at WHERE delivered_at IS NULL")
        )


async def test_a_committed_change_has_one_entry_each_and_a_rolled_back_one_none(
    harness: Harness,
) -> None:
    before = await outbox_rows(harness)
    async with harness.database.transaction() as session:
        await tenants.create_key(session, harness.operator(), name="kept", scope=Scope.SERVICE)
    committed = await outbox_rows(harness)
    assert len(committed) == len(before) + 1
    assert committed[-1].topic == committed[-1].type == "ApiKeyCreated"

    with pytest.raises(Failure):
        await create_a_key_and_fail(harness)
    assert await outbox_rows(harness) == committed

    # A plan grant writes an event-log entry per feature: an outbox row for each.
    granted = await harness.post("/v1/customers/ada/grants", {"plan": "pro"})
    assert granted.status_code == 201, granted.text
    rows = await outbox_rows(harness)
    new = rows[len(committed) :]
    assert [row.topic for row in new] == ["EntitlementGranted"] * 8
    assert all(row.topic == row.type for row in new)
    assert len({row.event_seq for row in rows}) == len(rows)


async def create_a_key_and_fail(harness: Harness) -> None:
    async with harness.database.transaction() as session:
        await tenants.create_key(session, harness.operator(), name="gone", scope=Scope.ADMIN)
        raise Failure  # the change rolls back, and its announcement with it


class Recorder:
    """A handler that remembers what it was handed, and fails while told to."""

    def __init__(self, failures: int = 0) -> None:
        self.seen: list[Announcement] = []
        self.failures = failures

    async def __call__(self, session: AsyncSession, announcement: Announcement) -> None:
        self.seen.append(announcement)
        if self.failures:
            self.failures -= 1
            raise Failure("the receiver is down")
        # The handler's own writes commit with the delivery, or not at all.
        await session.execute(
            rate_limit_counters.insert().values(
                key=f"outbox-test:{announcement.outbox_id}",
                window_start=announcement.occurred_at,
                count=1,
            )
        )


async def marks(harness: Harness, outbox_ids: Sequence[int]) -> int:
    async with harness.database.transaction(write=False) as session:
        keys = [f"outbox-test:{i}" for i in outbox_ids]
        statement = text("SELECT count(*) FROM rate_limit_counters WHERE key IN :keys")
        statement = statement.bindparams(bindparam("keys", expanding=True))
        return int(await session.scalar(statement, {"keys": keys}) or 0)


async def drain(source: OutboxSource, batch: int = 50) -> list[Claimed]:
    """Claim and deliver until nothing is pending now; what was claimed."""
    taken: list[Claimed] = []
    while claimed := await source.claim(batch):
        taken += claimed
        await source.handle(claimed, asyncio.Event())
    return taken


async def test_each_entry_is_delivered_once_with_the_handlers_writes(harness: Harness) -> None:
    await quiet(harness)
    await subscription(harness, "ada", "pro")
    recorder = Recorder()
    source = OutboxSource(harness.database, harness.clock, {ALL_TOPICS: [recorder]})
    taken = await drain(source)
    topics = Counter(a.type for a in recorder.seen)
    assert topics == {"EntitlementGranted": 8, "SubscriptionActivated": 1, "InvoiceCreated": 1}
    assert {a.tenant_id for a in recorder.seen} == {harness.tenant_id}
    assert await marks(harness, [item.id for item in taken]) == len(taken)
    assert await drain(source) == []  # delivered: never handed over again


async def test_a_failed_delivery_waits_its_backoff_and_is_parked_in_the_end(
    harness: Harness,
) -> None:
    await quiet(harness)
    await harness.key(Scope.READONLY)  # one entry: ApiKeyCreated
    recorder = Recorder(failures=10)
    source = OutboxSource(
        harness.database,
        harness.clock,
        {"ApiKeyCreated": [recorder]},
        max_attempts=3,
        backoff=Backoff(initial_s=60, factor=2, max_s=3600),
    )
    (first,) = await drain(source)
    assert len(recorder.seen) == 1
    assert await drain(source) == []  # not before its backoff
    harness.clock.advance(timedelta(seconds=61))
    assert len(await drain(source)) == 1  # attempt 2, after 60 s
    harness.clock.advance(timedelta(seconds=61))
    assert await drain(source) == []  # the next waits 120 s
    harness.clock.advance(timedelta(seconds=60))
    assert len(await drain(source)) == 1  # attempt 3 fails: parked
    harness.clock.advance(timedelta(days=1))
    assert await drain(source) == []
    assert [a.attempt for a in recorder.seen] == [1, 2, 3]
    async with harness.database.transaction(write=False) as session:
        row = (
            await session.execute(
                text("SELECT attempts, parked_at, last_error FROM outbox WHERE id = :i"),
                {"i": first.id},
            )
        ).one()
    assert row.attempts == 3
    assert row.parked_at is not None
    assert row.last_error == "Failure: the receiver is down"
    assert await marks(harness, [first.id]) == 0  # no failed attempt wrote anything


async def test_a_worker_told_to_stop_gives_back_what_it_has_not_begun(harness: Harness) -> None:
    await quiet(harness)
    await grant(harness, "ada", plan="pro")  # 8 entries
    stop = asyncio.Event()
    seen = 0

    async def stop_after_two(session: AsyncSession, announcement: Announcement) -> None:
        nonlocal seen
        seen += 1
        if seen == 2:
            stop.set()  # SIGTERM arrives while the second entry is in hand

    source = OutboxSource(harness.database, harness.clock, {ALL_TOPICS: [stop_after_two]})
    batch = await source.claim(100)
    await source.handle(batch, stop)
    assert seen == 2  # the entry in hand was finished, the rest given back at once
    assert len(await source.claim(100)) == len(batch) - 2


async def test_entries_whose_claim_expired_are_not_handled_by_the_worker_that_lost_them(
    harness: Harness,
) -> None:
    await quiet(harness)
    await grant(harness, "ada", plan="pro")  # 8 entries
    recorder = Recorder()
    slow = OutboxSource(
        harness.database, harness.clock, {ALL_TOPICS: [recorder]}, lease=timedelta(seconds=30)
    )
    held = await slow.claim(10)
    harness.clock.advance(timedelta(seconds=31))  # the slow worker's lease runs out
    fast = OutboxSource(harness.database, harness.clock, {ALL_TOPICS: [recorder]})
    assert [item.id for item in await drain(fast)] == [item.id for item in held]
    assert [await slow.deliver(item) for item in held] == [False] * 8  # claims gone
    assert len(recorder.seen) == 8  # each handler ran once: never for a lost claim
    assert await marks(harness, [item.id for item in held]) == 8


@postgresql_only  # SQLite has one writer: no other worker claims while one delivers
async def test_an_entry_being_delivered_is_not_claimed_even_past_its_lease(
    harness: Harness,
) -> None:
    await quiet(harness)
    await harness.key(Scope.READONLY)
    other = OutboxSource(harness.database, harness.clock, {})
    stolen: list[Claimed] = []

    async def slow(session: AsyncSession, announcement: Announcement) -> None:
        harness.clock.advance(timedelta(minutes=5))  # far past the lease
        stolen.extend(await other.claim(10))  # another worker looks meanwhile

    worker = OutboxSource(harness.database, harness.clock, {ALL_TOPICS: [slow]})
    (entry,) = await worker.claim(10)
    assert await worker.deliver(entry) is True
    assert stolen == []  # the row was held, lease or not


async def test_an_entry_whose_deliveries_never_finish_is_parked(harness: Harness) -> None:
    """A worker that dies mid-delivery leaves its claim to lapse; each claim counts."""
    await quiet(harness)
    await harness.key(Scope.READONLY)
    source = OutboxSource(harness.database, harness.clock, {}, max_attempts=3)
    for _ in range(3):  # claimed, then the worker dies before it delivers
        assert len(await source.claim(10)) == 1
        harness.clock.advance(timedelta(minutes=2))
    (fourth,) = await source.claim(10)
    assert await source.deliver(fourth) is False
    harness.clock.advance(timedelta(days=1))
    assert await source.claim(10) == []
    async with harness.database.transaction(write=False) as session:
        row = (
            await session.execute(
                text("SELECT parked_at, last_error FROM outbox WHERE id = :i"), {"i": fourth.id}
            )
        ).one()
    assert row.parked_at is not None
    assert row.last_error == "GaveUp: 3 attempts never finished"


@postgresql_only  # concurrent claims are what SKIP LOCKED is for; SQLite runs one writer
async def test_parallel_workers_never_deliver_an_entry_twice(harness: Harness) -> None:
    await quiet(harness)
    for index in range(30):  # 30 grants of one feature: 30 entries
        await grant(harness, f"c{index}", feature="rag.enabled", value=True)
    delivered: Counter[int] = Counter()

    async def count(session: AsyncSession, announcement: Announcement) -> None:
        delivered[announcement.seq] += 1
        await asyncio.sleep(0.001)  # let the other workers interleave

    workers = [
        OutboxSource(harness.database, harness.clock, {ALL_TOPICS: [count]}) for _ in range(4)
    ]
    claimed = await asyncio.gather(*(drain(worker, batch=3) for worker in workers))
    assert sum(len(c) for c in claimed) == 30
    assert len(delivered) == 30
    assert set(delivered.values()) == {1}
    assert sum(1 for c in claimed if c) > 1  # the work was shared


async def test_the_outbox_worker_drains_and_stops_on_sigterm(harness: Harness) -> None:
    await quiet(harness)
    await harness.key(Scope.READONLY)
    process = outbox_worker(harness)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        assert "draining" in line, line
        for _ in range(300):
            if not await pending(harness):
                break
            await asyncio.sleep(0.05)  # waiting on another process to deliver
        assert await pending(harness) == 0
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "outbox worker: stopped after handling" in output


def outbox_worker(harness: Harness) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env.update(
        BILLFOLD_DATABASE_URL=harness.settings.database_url,
        BILLFOLD_SECRET_KEY=harness.settings.secret_key.decode(),
    )
    return subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(ROOT / ".venv" / "bin" / "billfold"), "worker", "outbox", "--batch", "10"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def pending(harness: Harness) -> int:
    async with harness.database.transaction(write=False) as session:
        return int(
            await session.scalar(
                text("SELECT count(*) FROM outbox WHERE tenant_id = :t AND delivered_at IS NULL"),
                {"t": harness.tenant_id},
            )
            or 0
        )


async def test_delivered_rows_go_after_the_retention_and_parked_ones_stay(
    harness: Harness,
) -> None:
    await quiet(harness)
    await grant(harness, "ada", plan="pro")  # 8 entries, delivered below
    await drain(OutboxSource(harness.database, harness.clock, {}))
    await harness.key(Scope.READONLY)  # 1 entry, parked below
    failing = OutboxSource(
        harness.database, harness.clock, {ALL_TOPICS: [Recorder(failures=1)]}, max_attempts=1
    )
    await drain(failing)
    harness.clock.advance(timedelta(days=8))
    deleted = await prune(harness.database, harness.clock.now() - timedelta(days=7), chunk=3)
    assert deleted >= 8  # in chunks of 3, with whatever other tests delivered
    assert [row.topic for row in await outbox_rows(harness)] == ["ApiKeyCreated"]
