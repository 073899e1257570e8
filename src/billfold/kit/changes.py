"""The change stream that keeps every API process's caches correct.

A service that changes something a cache holds calls `publish(session, topic)` inside its
transaction. The process that made the change also applies it locally right after its
commit, so it reads its own writes. Every other process learns of it through its feed:

- On PostgreSQL `publish` is a `pg_notify`, which PostgreSQL delivers to every listening
  process when, and only if, the transaction commits.
- On SQLite `publish` appends the topic to the `change_feed` table in the same
  transaction, and every process polls that table (decision 0031): `PRAGMA data_version`
  every `POLL_INTERVAL_S`, which moves only when another connection committed, and then
  the rows past the last one it read. A change committed elsewhere (the CLI, a second
  server) reaches this process's caches within one poll, about 50 ms. If no poll has
  succeeded for `STALE_AFTER_S`, the feed goes dark, so no cached answer is ever older
  than that. Rows are pruned as new ones come; a process that finds rows it never read
  already pruned drops all its caches.

Caches are used only while the feed is `live`: while this process listens (PostgreSQL) or
polls (SQLite, on a file). While it is not, every answer comes from the database.

Topics: `customer:<tenant id>:<external id>` (the customer was created or its grants
changed), `key:<key id>` (revoked) and `catalog:<tenant id>` (plans applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.tables import change_feed

log = logging.getLogger("billfold.changes")

CHANNEL = "billfold_changes"
_PENDING = "billfold_pending_changes"
HEALTH_CHECK_S = 5.0
MAX_BACKOFF_S = 30.0
# SQLite: how often a process looks for changes committed elsewhere, and how long it keeps
# using its caches when it cannot look (then it drops them until a poll succeeds again).
POLL_INTERVAL_S = 0.05
STALE_AFTER_S = 1.0
# SQLite: the newest rows kept in `change_feed`; a poller further behind starts afresh.
KEEP_ROWS = 10_000
_BATCH = 1_000


async def publish(session: AsyncSession, topic: str) -> None:
    """Announce, as part of the caller's transaction, that `topic` changed."""
    pending: set[str] = session.info.setdefault(_PENDING, set())
    pending.add(topic)
    # Announce every time, even a topic already announced: an earlier announcement may
    # have been rolled back with a savepoint. PostgreSQL folds duplicates at commit.
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        await session.execute(select(func.pg_notify(CHANNEL, topic)))
    elif dialect == "sqlite":
        await session.execute(change_feed.insert().values(topic=topic))
        # Keep the newest rows only; this transaction holds the write lock already.
        await session.execute(
            delete(change_feed).where(change_feed.c.seq <= func.last_insert_rowid() - KEEP_ROWS)
        )


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
    """Hears of changes committed by any process (LISTEN on PostgreSQL, polling on a SQLite
    file) and hands them to the caches that subscribed."""

    def __init__(self, database_url: str, registry: CollectorRegistry) -> None:
        parsed = make_url(database_url)
        backend = parsed.get_backend_name()
        self._dsn = (
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            if backend == "postgresql"
            else None
        )
        # An in-memory SQLite database is private to its connection: nothing to poll.
        self._sqlite_path = (
            parsed.database
            if backend == "sqlite" and parsed.database and parsed.database != ":memory:"
            else None
        )
        self._handlers: list[Handler] = []
        self._resets: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._live = asyncio.Event()
        self._up = Gauge(
            "billfold_change_feed_up",
            "1 while this process hears of changes (and may use its caches)",
            registry=registry,
        )
        self._failures = Counter(
            "billfold_change_feed_failures",
            "Times the change feed failed, fell behind or went stale (caches were dropped)",
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
        if self._task is not None:
            return
        if self._dsn is not None:
            self._task = asyncio.create_task(self._listen(), name="billfold-change-feed")
        elif self._sqlite_path is not None:
            self._task = asyncio.create_task(
                self._poll(self._sqlite_path), name="billfold-change-feed"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._cancel_watchdog()
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

    async def _poll(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        backoff_s = 0.5
        while True:
            poller: _Poller | None = None
            try:
                poller = await asyncio.to_thread(_Poller, path)
                self._go_dark()  # forget anything cached before we were polling
                while True:
                    started = loop.time()
                    topics = await asyncio.to_thread(poller.poll)
                    if topics is None:
                        self._failures.inc()
                        log.warning("change feed: rows it never read were pruned; caches dropped")
                        self._go_dark()
                    else:
                        self.apply(topics)
                    self._fresh_until(loop, started + STALE_AFTER_S)
                    backoff_s = 0.5
                    await asyncio.sleep(POLL_INTERVAL_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._failures.inc()
                log.exception(
                    "change feed poll failed; caches dropped, retrying in %.1fs", backoff_s
                )
                self._cancel_watchdog()
                self._go_dark()
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            finally:
                if poller is not None:
                    poller.close()

    def _fresh_until(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """A poll that began at `deadline - STALE_AFTER_S` succeeded: the caches may be used
        until `deadline`, unless another poll succeeds before."""
        self._cancel_watchdog()
        if loop.time() >= deadline:
            self._stale()
            return
        self._watchdog = loop.call_at(deadline, self._stale)
        if not self._live.is_set():
            self._live.set()
            self._up.set(1)

    def _cancel_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _stale(self) -> None:
        self._watchdog = None
        if self._live.is_set():
            self._failures.inc()
            log.warning("change feed: no poll for %.1fs; caches dropped", STALE_AFTER_S)
        self._go_dark()


class _Poller:
    """A connection of its own on the SQLite file that reads `change_feed`. Blocking: the
    feed calls it from a worker thread. A lock keeps `close` (when the feed stops) from
    pulling the connection from under a poll still running in its thread."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        # mode=rw: a missing file is an error, not a new empty database.
        uri = Path(path).absolute().as_uri() + "?mode=rw"
        self._connection = sqlite3.connect(
            uri,
            uri=True,
            timeout=STALE_AFTER_S,
            isolation_level=None,
            check_same_thread=False,
        )
        self._connection.execute("PRAGMA query_only=ON")
        self._version: int | None = None
        self.seq = self._high()

    def _high(self) -> int:
        row = self._connection.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'change_feed'"
        ).fetchone()
        return int(row[0]) if row else 0

    def poll(self) -> set[str] | None:
        """The topics committed since the last poll; None if some of them were pruned
        before this process read them (or the sequence went back: another database)."""
        with self._lock:
            return self._poll()

    def _poll(self) -> set[str] | None:
        # Moves only when another connection commits: checks shared memory, reads nothing.
        version = int(self._connection.execute("PRAGMA data_version").fetchone()[0])
        if version == self._version:
            return set()
        self._connection.execute("BEGIN")
        try:
            high = self._high()
            rows = self._connection.execute(
                "SELECT seq, topic FROM change_feed WHERE seq > ? ORDER BY seq LIMIT ?",
                (self.seq, _BATCH),
            ).fetchall()
        finally:
            self._connection.execute("COMMIT")
        missed = high < self.seq or (high > self.seq and (not rows or rows[0][0] != self.seq + 1))
        # A full batch may have more behind it: read on at the next poll.
        self._version = None if len(rows) == _BATCH and not missed else version
        if missed:
            self.seq = high
            return None
        if rows:
            self.seq = int(rows[-1][0])
        return {str(topic) for _seq, topic in rows}

    def close(self) -> None:
        with self._lock:
            self._connection.close()
