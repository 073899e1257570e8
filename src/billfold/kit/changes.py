"""The change stream that keeps every API process's caches correct.

A service that changes something a cache holds calls `publish(session, topic)` inside its
transaction. On PostgreSQL that is a `pg_notify`, which PostgreSQL delivers to every
listening process when, and only if, the transaction commits. The process that made the
change also applies it locally right after its commit, so it reads its own writes.

Caches are used only while the feed is `live`: while this process listens on PostgreSQL.
SQLite has no cross-process notifications (the CLI may write from another process), so
on SQLite nothing is cached and every answer comes from the database.

Topics: `customer:<tenant id>:<external id>` (the customer was created or its grants
changed), `key:<key id>` (revoked) and `catalog:<tenant id>` (plans applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("billfold.changes")

CHANNEL = "billfold_changes"
_PENDING = "billfold_pending_changes"
HEALTH_CHECK_S = 5.0
MAX_BACKOFF_S = 30.0


async def publish(session: AsyncSession, topic: str) -> None:
    """Announce, as part of the caller's transaction, that `topic` changed."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    pending.add(topic)
    # Notify every time, even for a topic already announced: an earlier announcement may
    # have been rolled back with a savepoint. PostgreSQL folds duplicates at commit.
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_notify(CHANNEL, topic)))


def pending(session: AsyncSession) -> set[str]:
    """What the session's (now committed) transaction announced."""
    topics: set[str] = session.info.pop(_PENDING, set())
    return topics


class Generations:
    """Guards a cache against filling itself with data older than an invalidation.

    Take a `stamp(key)` before reading the database and `store` only if the stamp is
    still current: an invalidation (or a reset) in between makes the fill a no-op.
    """

    def __init__(self, max_tracked: int = 100_000) -> None:
        self._epoch = 0
        self._counts: dict[Hashable, int] = {}
        self._max_tracked = max_tracked

    def stamp(self, key: Hashable) -> tuple[int, int]:
        return self._epoch, self._counts.get(key, 0)

    def current(self, key: Hashable, stamp: tuple[int, int]) -> bool:
        return stamp == self.stamp(key)

    def bump(self, key: Hashable) -> None:
        if len(self._counts) >= self._max_tracked:
            self.reset()
        self._counts[key] = self._counts.get(key, 0) + 1

    def reset(self) -> None:
        self._epoch += 1
        self._counts.clear()


Handler = Callable[[str], None]


class ChangeFeed:
    """Listens on PostgreSQL for changes and hands them to the caches that subscribed."""

    def __init__(self, database_url: str, registry: CollectorRegistry) -> None:
        parsed = make_url(database_url)
        self._dsn = (
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            if parsed.get_backend_name() == "postgresql"
            else None
        )
        self._handlers: list[Handler] = []
        self._resets: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._live = asyncio.Event()
        self._up = Gauge(
            "billfold_change_feed_up",
            "1 while this process listens for changes (and may use its caches)",
            registry=registry,
        )
        self._failures = Counter(
            "billfold_change_feed_failures",
            "Times the change listener lost its connection (caches were dropped)",
            registry=registry,
        )

    def subscribe(self, handler: Handler, reset: Callable[[], None]) -> None:
        self._handlers.append(handler)
        self._resets.append(reset)

    def apply(self, topics: set[str]) -> None:
        for topic in topics:
            for handler in self._handlers:
                handler(topic)

    @property
    def live(self) -> bool:
        return self._live.is_set()

    async def wait_live(self, timeout_s: float) -> bool:
        """Wait until this process listens; False if it does not within `timeout_s`."""
        try:
            await asyncio.wait_for(self._live.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _go_dark(self) -> None:
        self._live.clear()
        self._up.set(0)
        for reset in self._resets:
            reset()

    async def start(self) -> None:
        if self._dsn is not None and self._task is None:
            self._task = asyncio.create_task(self._listen(), name="billfold-change-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._go_dark()

    async def _listen(self) -> None:
        import asyncpg

        backoff_s = 0.5
        while True:
            connection: Any = None
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(self._dsn)
                connection.add_termination_listener(lambda _connection, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                self._go_dark()  # forget anything cached before we were listening
                self._live.set()
                self._up.set(1)
                backoff_s = 0.5
                while True:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), HEALTH_CHECK_S)
                    if lost.is_set():
                        raise ConnectionError("the listening connection was closed")
                    await connection.fetchval("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception:
                self._failures.inc()
                log.exception("change listener lost; caches dropped, retrying in %.1fs", backoff_s)
                self._go_dark()
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            finally:
                if connection is not None and not connection.is_closed():
                    await connection.close()

    def _on_notify(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        self.apply({payload})
