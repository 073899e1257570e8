"""The check path's in-process caches, kept correct by the change feed: LISTEN/NOTIFY on
PostgreSQL, the polled `change_feed` table on SQLite (tests/kit/test_changes_sqlite.py has
SQLite's own cases: the CLI in another process, the staleness bound, pruning)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import event, text

from billfold.http.calls import Runtime
from tests.conftest import Harness, new_harness, postgresql_only

pytestmark = pytest.mark.anyio
LISTEN_TIMEOUT_S = 10.0


def runtime_of(harness: Harness) -> Runtime:
    app: Any = harness.client._transport.app  # type: ignore[attr-defined]
    runtime: Runtime = app.state.runtime
    return runtime


@pytest.fixture
async def live(harness: Harness) -> AsyncIterator[Harness]:
    feed = runtime_of(harness).changes
    await feed.start()
    assert await feed.wait_live(LISTEN_TIMEOUT_S)
    try:
        yield harness
    finally:
        await feed.stop()


class StatementCounter:
    """Counts the SQL statements the app's engine sends (observes; changes nothing)."""

    def __init__(self, harness: Harness) -> None:
        self.engine = harness.database.engine.sync_engine
        self.count = 0

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1


async def allowed(harness: Harness, customer: str, headers: dict[str, str] | None = None) -> Any:
    response = await harness.post(
        "/v1/entitlements/check",
        {"customer": customer, "feature": "spaces.max", "current": 10},
        headers=headers or harness.admin,
    )
    assert response.status_code == 200, response.text
    return response.json()["allowed"]


async def eventually(probe: Callable[[], Any], expected: object) -> None:
    """Poll until another process's change has reached this one (a NOTIFY away)."""
    for _ in range(500):
        if await probe() == expected:
            return
        await asyncio.sleep(0.01)  # waiting on a NOTIFY, or on SQLite's next poll
    raise AssertionError(f"never became {expected!r}")


async def test_warm_checks_touch_no_database(live: Harness) -> None:
    assert await allowed(live, "warm") is False
    with StatementCounter(live) as counter:
        for _ in range(20):
            assert await allowed(live, "warm") is False
    assert counter.count == 0


async def test_a_grant_is_seen_by_the_next_check_in_this_process(live: Harness) -> None:
    assert await allowed(live, "rex") is False  # free: 3 spaces
    await live.post("/v1/customers/rex/grants", {"plan": "pro"})
    assert await allowed(live, "rex") is True
    grant = (await live.get("/v1/customers/rex/grants")).json()["grants"][0]
    await live.post(f"/v1/grants/{grant['id']}/revoke")
    assert await allowed(live, "rex") is False


async def test_changes_made_by_another_process_reach_the_cache(
    live: Harness, database_url: str
) -> None:
    other = await new_harness(database_url)
    other.tenant_id = live.tenant_id  # a second app process on the same tenant
    other.admin = live.admin
    try:
        assert await allowed(live, "sam") is False
        await other.post("/v1/customers/sam/subscriptions", {"plan": "studio"})
        await eventually(lambda: allowed(live, "sam"), True)

        service_key = await live.key("service")
        assert await allowed(live, "sam", service_key) is True
        key_id = (await live.get("/v1/keys")).json()["keys"][-1]["id"]
        await other.post(f"/v1/keys/{key_id}/revoke")

        async def status() -> int:
            response = await live.post(
                "/v1/entitlements/check",
                {"customer": "sam", "feature": "share.enabled"},
                headers=service_key,
            )
            return response.status_code

        await eventually(status, 401)
    finally:
        await other.client.aclose()
        await other.database.dispose()


# PostgreSQL only: it kills the LISTEN connection (SQLite's feed going dark is tested in
# tests/kit/test_changes_sqlite.py).
@postgresql_only
async def test_losing_the_listener_drops_the_caches(live: Harness) -> None:
    feed = runtime_of(live).changes
    assert await allowed(live, "tia") is False
    async with live.database.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
        )
        await conn.commit()
    for _ in range(500):
        if not feed.live:
            break
        await asyncio.sleep(0.01)  # waiting for the listener to notice its connection died
    assert not feed.live
    # Dark (the listener waits half a second before reconnecting): answered from the database.
    with StatementCounter(live) as counter:
        await allowed(live, "tia")
    assert counter.count > 0
    assert await feed.wait_live(LISTEN_TIMEOUT_S)  # and it reconnects by itself
