"""Group commit for consume: the consumes that arrive while one transaction runs are
checked and recorded together in the next one (docs/decisions/0017).

One customer's consumes take effect one after the other, however many clients send
them. Run one transaction each, and a hot customer gets as many consumes a second as
round trips fit in a second; spread over many customers, each consume pays for its own
seven. Batched, a transaction costs the same few round trips for one consume or five
hundred, and holds each account's lock once.

On PostgreSQL a batch first runs without a transaction: it reads its accounts, draws,
and writes each account only at the version it read (docs/decisions/0018). That is two
round trips instead of five. The consumes of an account that moved meanwhile, or that
writes the event log, are drawn again in a locked transaction.

Every answer is the one the consume would get alone, in arrival order: the batch draws
them one after the other. Nothing is answered before its batch has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Final

from sqlalchemy.exc import DBAPIError

from billfold.grants.snapshots import SnapshotCache
from billfold.kit.db import Database
from billfold.kit.errors import BillfoldError
from billfold.metering.quotas.consume import (
    Consumed,
    ConsumeRequest,
    KeyRaced,
    consume_batch,
    consume_unlocked,
)

log = logging.getLogger("billfold.quotas")

MAX_BATCH: Final = 500
# Batches run at once, on different accounts: while one waits on the database, the next
# is checked and sent. Consumes of an account that a running batch holds wait for it.
IN_FLIGHT: Final = 4
ATTEMPTS: Final = 4  # a batch that lost a race (a key, a deadlock) runs again, this often
# An account whose unlocked write lost a race, or that wrote the event log, stays on the
# locked path for this many batches of the process.
LOCKED_FOR: Final = 100

Pending = tuple[ConsumeRequest, "asyncio.Future[Consumed]"]


class ConsumeContended(BillfoldError):
    status = 503
    code = "consume_contended"
    title = "Consumes kept racing for the same keys or rows; retry"


class ConsumeBatcher:
    """One per process. `consume` waits for the batch that holds its request."""

    def __init__(
        self,
        database: Database,
        *,
        late_window: timedelta,
        snapshots: Callable[[], SnapshotCache | None],
        on_batch: Callable[[int], None] = lambda _size: None,
        on_redraw: Callable[[int], None] = lambda _count: None,
        on_unlocked: Callable[[int], None] = lambda _count: None,
    ) -> None:
        self._database = database
        self._late_window = late_window
        self._snapshots = snapshots
        self._on_batch = on_batch
        self._on_redraw = on_redraw
        self._on_unlocked = on_unlocked
        self._queue: list[Pending] = []
        self._runners: set[asyncio.Task[None]] = set()
        self._held: set[AccountKey] = set()  # the accounts of the batches in flight
        self._batches = 0  # batches run so far
        self._contended: dict[AccountKey, int] = {}  # account -> locked until batch number

    async def consume(self, request: ConsumeRequest) -> Consumed:
        """The consume's answer once its batch has committed; raises its refusal."""
        future: asyncio.Future[Consumed] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a refusal nobody waits for any more is fine
        self._queue.append((request, future))
        if len(self._runners) < IN_FLIGHT and _key(request) not in self._held:
            runner = asyncio.create_task(self._drain())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)
        # A client that leaves does not cancel the batch: what it holds still commits, and
        # the client's retry with the same key is answered `replayed`.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Let the batches in hand finish (at shutdown)."""
        while self._runners:
            await asyncio.gather(*self._runners)

    async def _drain(self) -> None:
        while batch := self._take():
            keys = {_key(request) for request, _future in batch}
            self._held |= keys
            try:
                await self._settle(batch)
            finally:
                self._held -= keys

    def _take(self) -> list[Pending]:
        """The next batch: queued consumes, in order, of accounts no batch in flight holds.

        A second batch on a held account would only wait for its row lock, so consumes of
        one hot account go one batch at a time, in arrival order, while other accounts'
        batches run beside it."""
        batch: list[Pending] = []
        left: list[Pending] = []
        for pending in self._queue:
            if len(batch) < MAX_BATCH and _key(pending[0]) not in self._held:
                batch.append(pending)
            else:
                left.append(pending)
        self._queue = left
        return batch

    async def _settle(self, batch: list[Pending]) -> None:
        self._on_batch(len(batch))
        self._batches += 1
        answers: list[Consumed | BaseException | None] = [None] * len(batch)
        look_up_keys = False
        again = list(range(len(batch)))
        if self._database.is_postgres and not any(
            self._contended.get(_key(request), 0) > self._batches for request, _f in batch
        ):
            answers, look_up_keys = await self._run_unlocked(batch)
            again = [index for index, answer in enumerate(answers) if answer is None]
            self._on_unlocked(len(batch) - len(again))
            # Their accounts moved, they write the event log, or a key was stored
            # already: drawn again under lock.
            self._on_redraw(len(again))
        if again:
            locked = await self._run_locked([batch[i] for i in again], look_up_keys)
            for index, answer in zip(again, locked, strict=True):
                answers[index] = answer
        for (_request, future), done in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(done, BaseException):
                future.set_exception(done)
            elif done is not None:
                future.set_result(done)

    async def _run_unlocked(
        self, batch: list[Pending]
    ) -> tuple[list[Consumed | BaseException | None], bool]:
        """The batch without locks (PostgreSQL): an answer per consume, None for those to
        draw again under lock; and whether their keys must be looked up first."""
        answers: list[Consumed | BaseException | None] = [None] * len(batch)
        look_up_keys = False
        for tenant, indexes in _by_tenant(batch):
            done: Sequence[Consumed | BaseException | None]
            try:
                async with self._database.autocommit() as session:
                    done, locked = await consume_unlocked(
                        session,
                        [batch[i][0] for i in indexes],
                        late_window=self._late_window,
                        snapshots=self._snapshots(),
                    )
                self._hold_back(tenant, locked)
            except KeyRaced:
                look_up_keys = True
                continue  # nothing was written: under lock, with the keys looked up
            except DBAPIError as error:
                if _worth_retrying(error):
                    continue
                done = [error] * len(indexes)
            except Exception as error:  # every consume of the tenant gets the failure
                done = [error] * len(indexes)
            for index, answer in zip(indexes, done, strict=True):
                answers[index] = answer
        return answers, look_up_keys

    def _hold_back(self, tenant_id: str, accounts: set[tuple[str, str]]) -> None:
        """Keep these accounts on the locked path for a while: they lost a race, or they
        write the event log, and would most likely do it again (a hot account that two
        processes share, a customer in overage under `advisory`)."""
        for customer, feature in accounts:
            self._contended[(tenant_id, customer, feature)] = self._batches + LOCKED_FOR
        if len(self._contended) > 10_000:  # forget the accounts that are due back
            self._contended = {k: n for k, n in self._contended.items() if n > self._batches}

    async def _run_locked(
        self, batch: list[Pending], look_up_keys: bool
    ) -> list[Consumed | BaseException]:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                # The first run takes every key to be new, unless told; a retry looks
                # them up.
                return await self._run(batch, look_up_keys=look_up_keys or attempt > 1)
            except (KeyRaced, DBAPIError) as error:
                if not _worth_retrying(error):
                    return [error] * len(batch)
                if attempt == ATTEMPTS:
                    log.warning("consume batch of %d lost %d races: %s", len(batch), attempt, error)
                    busy = ConsumeContended(
                        f"the batch holding this consume lost {attempt} races ({error}); "
                        "retrying with the same idempotency key is safe",
                        headers={"Retry-After": "1"},
                    )
                    return [busy] * len(batch)
                log.debug("consume batch of %d runs again (%s)", len(batch), error)
            except Exception as error:  # every consume in the batch gets the failure
                return [error] * len(batch)
        raise AssertionError("unreachable")

    async def _run(
        self, batch: list[Pending], *, look_up_keys: bool
    ) -> list[Consumed | BaseException]:
        answers: list[Consumed | BaseException] = [RuntimeError("not run")] * len(batch)
        async with self._database.transaction() as session:
            # Tenants in a fixed order, each one's accounts locked in key order: two
            # processes' batches take their locks in the same order and never deadlock.
            for _tenant, indexes in _by_tenant(batch):
                done = await consume_batch(
                    session,
                    [batch[i][0] for i in indexes],
                    late_window=self._late_window,
                    snapshots=self._snapshots(),
                    look_up_keys=look_up_keys,
                )
                for index, answer in zip(indexes, done, strict=True):
                    answers[index] = answer
        return answers


def _by_tenant(batch: list[Pending]) -> list[tuple[str, list[int]]]:
    """The batch's positions by tenant, tenants in a fixed order."""
    by_tenant: dict[str, list[int]] = {}
    for index, (request, _future) in enumerate(batch):
        by_tenant.setdefault(request.ctx.tenant_id, []).append(index)
    return sorted(by_tenant.items())


AccountKey = tuple[str, str, str]


def _key(request: ConsumeRequest) -> AccountKey:
    return request.ctx.tenant_id, request.customer, request.quota.feature.key


def _retrieve(future: asyncio.Future[Consumed]) -> None:
    if not future.cancelled():
        future.exception()


def _worth_retrying(error: Exception) -> bool:
    if isinstance(error, KeyRaced):
        return True
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")  # serialization failure, deadlock
