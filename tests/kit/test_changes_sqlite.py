"""SQLite's change feed: every process polls the `change_feed` table, so caches stay
correct when another process (the CLI, a second server) writes the same file.

SQLite only by nature: PostgreSQL's feed is LISTEN/NOTIFY (tests/entitlements/
test_hot_path.py runs the cases both feeds share on both backends). Each test works on a
database file of its own, copied from one migrated template, because some of them lock
the file or write rows straight into `change_feed`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from billfold.kit import changes
from billfold.kit.changes import KEEP_ROWS, STALE_AFTER_S, change_feed
from billfold.kit.migrate import upgrade
from tests.conftest import PLANS, ROOT, SECRET_KEY, Harness, new_harness
from tests.entitlements.test_hot_path import StatementCounter, allowed, runtime_of

pytestmark = pytest.mark.anyio
BILLFOLD = ROOT / ".venv" / "bin" / "billfold"
LIVE_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("change-feed") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def database_file(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "billfold.db"
    shutil.copyfile(template, path)
    return path


@pytest.fixture
async def live(database_file: Path) -> AsyncIterator[Harness]:
    """An app on its own SQLite file whose change feed polls."""
    harness = await new_harness(f"sqlite:///{database_file}")
    feed = runtime_of(harness).changes
    await feed.start()
    assert await feed.wait_live(LIVE_TIMEOUT_S)
    try:
        yield harness
    finally:
        await feed.stop()
        await harness.client.aclose()
        await harness.database.dispose()


async def second_process(live: Harness) -> Harness:
    """Another app, with an engine and connections of its own, on the same file and tenant."""
    other = await new_harness(live.database.url)
    other.tenant_id, other.admin = live.tenant_id, live.admin
    return other


async def seen_within(probe: Any, expected: object, bound_s: float) -> float:
    """Seconds until `probe()` answers `expected`; fails past `bound_s`."""
    started = time.monotonic()
    while True:
        if await probe() == expected:
            return time.monotonic() - started
        assert time.monotonic() - started < bound_s, f"not {expected!r} within {bound_s}s"
        await asyncio.sleep(0.005)


async def answered_from_the_cache(harness: Harness, customer: str) -> None:
    """A check of `customer` is answered with no SQL statement within the staleness bound.

    Under a loaded machine a poll can miss the bound and the watchdog drops the caches
    (as it must); the next checks fill them again. Never answering from the cache fails."""
    started = time.monotonic()
    while True:
        with StatementCounter(harness) as counter:
            assert await allowed(harness, customer) is False
        if counter.count == 0:
            return
        assert time.monotonic() - started < 2 * STALE_AFTER_S, "never answered from the cache"
        await asyncio.sleep(0.01)


async def failures(harness: Harness) -> float:
    """`billfold_change_feed_failures_total`, as `/metrics` shows it."""
    text = (await harness.client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "billfold_change_feed_failures_total":
                return float(sample.value)
    raise AssertionError("no billfold_change_feed_failures_total in /metrics")


async def test_a_grant_committed_by_another_connection_is_seen_within_the_bound(
    live: Harness,
) -> None:
    other = await second_process(live)
    try:
        assert await allowed(live, "ann") is False  # free: 3 spaces; now cached
        await answered_from_the_cache(live, "ann")
        response = await other.post("/v1/customers/ann/grants", {"plan": "pro"})
        assert response.status_code == 201, response.text
        await seen_within(lambda: allowed(live, "ann"), True, STALE_AFTER_S)
    finally:
        await other.client.aclose()
        await other.database.dispose()


async def test_a_key_revoked_by_another_connection_is_refused_within_the_bound(
    live: Harness,
) -> None:
    other = await second_process(live)
    try:
        service = await live.key("service")
        assert await allowed(live, "bo", service) is False
        key_id = (await live.get("/v1/keys")).json()["keys"][-1]["id"]
        assert (await other.post(f"/v1/keys/{key_id}/revoke")).status_code == 200

        async def status() -> int:
            response = await live.post(
                "/v1/entitlements/check",
                {"customer": "bo", "feature": "share.enabled"},
                headers=service,
            )
            return response.status_code

        await seen_within(status, 401, STALE_AFTER_S)
    finally:
        await other.client.aclose()
        await other.database.dispose()


async def billfold(database_file: Path, *args: str) -> str:
    """The `billfold` command in a subprocess; the event loop (and the feed) keeps running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env["BILLFOLD_DATABASE_URL"] = f"sqlite:///{database_file}"
    env["BILLFOLD_SECRET_KEY"] = SECRET_KEY.decode()
    process = await asyncio.create_subprocess_exec(
        str(BILLFOLD),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, (out.decode(), err.decode())
    return out.decode()


async def tenant_slug(live: Harness) -> str:
    connection = sqlite3.connect(live.database.url.removeprefix("sqlite:///"))
    try:
        row = connection.execute("SELECT slug FROM tenants WHERE id = ?", (live.tenant_id,))
        return str(row.fetchone()[0])
    finally:
        connection.close()


async def test_the_cli_in_another_process_reaches_a_running_apps_caches(
    live: Harness, database_file: Path, tmp_path: Path
) -> None:
    slug = await tenant_slug(live)
    # The CLI grants from the real now; look a day past it, where that grant is live.
    live.clock.travel_to(datetime.now(UTC) + timedelta(days=1))
    assert await allowed(live, "cy") is False
    await billfold(
        database_file, "grants", "add", "--customer", "cy", "--plan", "pro", "--tenant", slug
    )
    await seen_within(lambda: allowed(live, "cy"), True, STALE_AFTER_S)

    async def probe_status() -> int:
        response = await live.post(
            "/v1/entitlements/check", {"customer": "cy", "feature": "feed.probe"}
        )
        return response.status_code

    assert await probe_status() == 404  # no such feature yet
    plans = tmp_path / "plans.yaml"
    plans.write_text(
        PLANS.read_text(encoding="utf-8").replace(
            "\nfeatures:\n",
            "\nfeatures:\n  feed.probe:\n    type: boolean\n    description: Probe\n",
            1,
        ),
        encoding="utf-8",
    )
    await billfold(database_file, "plans", "apply", str(plans), "--tenant", slug)
    await seen_within(probe_status, 200, STALE_AFTER_S)


async def test_this_processs_own_writes_are_seen_at_once(live: Harness) -> None:
    assert await allowed(live, "di") is False
    await live.post("/v1/customers/di/grants", {"plan": "pro"})
    assert await allowed(live, "di") is True  # no poll in between: applied after the commit


async def test_a_feed_that_cannot_poll_goes_dark_and_drops_the_caches(
    live: Harness, database_file: Path
) -> None:
    feed = runtime_of(live).changes
    assert await allowed(live, "ed") is False  # cached
    before = await failures(live)
    other = sqlite3.connect(database_file, isolation_level=None)
    try:
        # What a restore from an older backup would do: the table the feed reads is gone.
        other.execute("ALTER TABLE change_feed RENAME TO change_feed_away")
        started = time.monotonic()
        while feed.live:
            assert time.monotonic() - started < STALE_AFTER_S, "still live, yet cannot poll"
            await asyncio.sleep(0.01)
        assert await failures(live) > before
        # Dark: nothing is answered from a cache.
        with StatementCounter(live) as counter:
            assert await allowed(live, "ed") is False
        assert counter.count > 0
        other.execute("ALTER TABLE change_feed_away RENAME TO change_feed")
    finally:
        other.close()
    assert await feed.wait_live(LIVE_TIMEOUT_S)  # polls again by itself
    with StatementCounter(live) as counter:
        assert await allowed(live, "ed") is False
    assert counter.count > 0  # the cache was dropped, not kept through the outage


async def test_caches_are_dropped_when_no_poll_succeeded_within_the_bound(
    live: Harness,
) -> None:
    assert await allowed(live, "gus") is False  # cached
    before = await failures(live)
    # A process too busy to poll (here: an event loop blocked past the bound) may have
    # missed changes: its caches must not outlive the bound.
    time.sleep(STALE_AFTER_S + 0.2)  # noqa: ASYNC251 (blocking the loop is the point)
    await asyncio.sleep(0.01)
    assert await failures(live) > before
    with StatementCounter(live) as counter:
        assert await allowed(live, "gus") is False
    assert counter.count > 0


async def test_rows_pruned_before_they_were_read_drop_every_cache(
    live: Harness, database_file: Path
) -> None:
    feed = runtime_of(live).changes
    assert await allowed(live, "flo") is False
    with StatementCounter(live) as counter:
        assert await allowed(live, "flo") is False
    assert counter.count == 0
    before = await failures(live)
    # Another process's changes whose first row is pruned before this process polled:
    # it cannot know what it missed, so it must forget everything.
    writer = sqlite3.connect(database_file, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        first = writer.execute(
            "INSERT INTO change_feed (topic) VALUES ('customer:elsewhere:x') RETURNING seq"
        ).fetchone()[0]
        writer.execute("INSERT INTO change_feed (topic) VALUES ('customer:elsewhere:y')")
        writer.execute("DELETE FROM change_feed WHERE seq = ?", (first,))
        writer.execute("COMMIT")
    finally:
        writer.close()
    started = time.monotonic()
    while await failures(live) == before:
        assert time.monotonic() - started < STALE_AFTER_S, "the gap went unnoticed"
        await asyncio.sleep(0.01)
    assert feed.live  # caught up again
    with StatementCounter(live) as counter:
        assert await allowed(live, "flo") is False
    assert counter.count > 0


async def test_publishing_keeps_only_the_newest_rows(live: Harness, database_file: Path) -> None:
    writer = sqlite3.connect(database_file, isolation_level=None)
    try:
        writer.executemany(
            "INSERT INTO change_feed (topic) VALUES (?)",
            [(f"customer:old:{n}",) for n in range(KEEP_ROWS + 50)],
        )
    finally:
        writer.close()
    async with live.database.transaction() as session:
        await changes.publish(session, "customer:new:z")
    async with live.database.transaction(write=False) as session:
        count = (await session.execute(select(func.count()).select_from(change_feed))).scalar()
        newest = (
            await session.execute(
                select(change_feed.c.topic).order_by(change_feed.c.seq.desc()).limit(1)
            )
        ).scalar()
    assert count == KEEP_ROWS
    assert newest == "customer:new:z"
