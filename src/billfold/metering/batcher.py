"""Group commit for consume: the consumes that arrive while one transaction runs are
checked and recorded together in the next one (docs/decisions/0017).

A consume must lock its quota account, so one customer's consumes run one after the
other however many clients send them. Run one transaction each, and a hot customer gets
as many consumes a second as round trips fit in a second; spread over many customers,
each consume pays for its own seven. Batched, a transaction costs the same few round
trips for one consume or five hundred, and holds each account's lock once.

Every answer is the one the consume would get alone, in arrival order: the batch draws
them one after the other. Nothing is answered before its batch has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Final

from sqlalchemy.exc import DBAPIError

from billfold.entitlements.snapshot import SnapshotCache
from billfold.kit.db import Database
from billfold.kit.errors import BillfoldError
from billfold.metering import quotas
from billfold.metering.quotas import Consumed, ConsumeRequest

log = logging.getLogger("billfold.quotas")

MAX_BATCH: Final = 500
# Batches run at once, on different accounts: while one waits on the database, the next
# is checked and sent. Consumes of an account that a running batch holds wait for it.
IN_FLIGHT: Final = 4
ATTEMPTS: Final = 4  # a batch that lost a race (a key, a deadlock) runs again, this often

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
    ) -> None:
        self._database = database
        self._late_window = late_window
        self._snapshots = snapshots
        self._on_batch = on_batch
        self._queue: list[Pending] = []
        self._runners: set[asyncio.Task[None]] = set()
        self._held: set[AccountKey] = set()  # the accounts of the batches in flight

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
        answers: list[Consumed | BaseException] | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                # The first run takes every key to be new; a retry looks them up.
                answers = await self._run(batch, look_up_keys=attempt > 1)
                break
            except (quotas.KeyRaced, DBAPIError) as error:
                if not _worth_retrying(error):
                    answers = [error] * len(batch)
                    break
                if attempt == ATTEMPTS:
                    log.warning("consume batch of %d lost %d races: %s", len(batch), attempt, error)
                    busy = ConsumeContended(
                        f"the batch holding this consume lost {attempt} races ({error}); "
                        "retrying with the same idempotency key is safe",
                        headers={"Retry-After": "1"},
                    )
                    answers = [busy] * len(batch)
                    break
                log.debug("consume batch of %d runs again (%s)", len(batch), error)
            except Exception as error:  # every consume in the batch gets the failure
                answers = [error] * len(batch)
                break
        assert answers is not None
        for (_request, future), answer in zip(batch, answers, strict=True):
            if future.done():
                continue
            if isinstance(answer, BaseException):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def _run(
        self, batch: list[Pending], *, look_up_keys: bool
    ) -> list[Consumed | BaseException]:
        by_tenant: dict[str, list[int]] = {}
        for index, (request, _future) in enumerate(batch):
            by_tenant.setdefault(request.ctx.tenant_id, []).append(index)
        answers: list[Consumed | BaseException] = [RuntimeError("not run")] * len(batch)
        async with self._database.transaction() as session:
            # Tenants in a fixed order, each one's accounts locked in key order: two
            # processes' batches take their locks in the same order and never deadlock.
            for _tenant, indexes in sorted(by_tenant.items()):
                done = await quotas.consume_batch(
                    session,
                    [batch[i][0] for i in indexes],
                    late_window=self._late_window,
                    snapshots=self._snapshots(),
                    look_up_keys=look_up_keys,
                )
                for index, answer in zip(indexes, done, strict=True):
                    answers[index] = answer
        return answers


AccountKey = tuple[str, str, str]


def _key(request: ConsumeRequest) -> AccountKey:
    return request.ctx.tenant_id, request.customer, request.quota.feature.key


def _retrieve(future: asyncio.Future[Consumed]) -> None:
    if not future.cancelled():
        future.exception()


def _worth_retrying(error: Exception) -> bool:
    if isinstance(error, quotas.KeyRaced):
        return True
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")  # serialization failure, deadlock
