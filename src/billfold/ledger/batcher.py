"""Group commit for transfers: the requests of a tenant that arrive while its group's
transaction runs are applied together in the next one (decision 0040).

One transaction per transfer costs each transfer its own BEGIN, locks, insert, update
and COMMIT, and on a hot account every writer queues on its row lock for all of them.
Grouped, a transaction costs the same few round trips for one request or a hundred, and
holds each account's lock once (as consume does, decision 0017).

Each request (a single transfer, or a linked batch) keeps its own answer: it is worked
out in arrival order against the balances the group's earlier requests left, and a
refusal refuses only it (`service.transfer_group`). Nothing is answered before the group
has committed. If the group's transaction fails as a whole (a deadlock, a serialization
failure, a lost connection, an id that kept racing), each of its requests is applied
again alone, in a transaction of its own: the ids make that safe, a request that did
commit is answered as stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from billfold.kit.context import Context
from billfold.kit.db import Database
from billfold.ledger import service
from billfold.ledger.checks import check_linked
from billfold.ledger.records import NewTransfer, Transfer
from billfold.ledger.service import GroupRaced, Linked

log = logging.getLogger("billfold.ledger")

# Transfers in one group at most (a linked batch of more goes alone, in a group of one).
MAX_GROUP: Final = 1_000
# Groups of one tenant in flight at once, by default: one. While it commits, the next
# requests queue and go together in the following group. Two in flight overlap one's
# round trips with the other's work, but halve the groups, and this process's CPU per
# transaction is what limits it: 32 clients spread over 1,000 accounts made 3,580/s
# (median of 6 runs) with two, 4,220/s (of 4) with one (decision 0040). Each app
# instance has its own batcher, so groups of several instances still overlap, their
# locks taken in id order (never in a circle).
IN_FLIGHT: Final = 1
ATTEMPTS: Final = 3  # a group whose insert found an id taken runs again, this often


@dataclass
class _Pending:
    request: Linked
    future: asyncio.Future[list[Transfer]]


class TransferBatcher:
    """One per process. `transfer` and `transfer_many` wait for the group that holds
    their request; each raises its own refusal."""

    def __init__(
        self,
        database: Database,
        *,
        in_flight: int | None = None,
        on_group: Callable[[int], None] = lambda _size: None,
        on_alone: Callable[[int], None] = lambda _count: None,
    ) -> None:
        self._database = database
        # SQLite writes one transaction at a time whatever is asked.
        self._in_flight = (in_flight or IN_FLIGHT) if database.is_postgres else 1
        self._on_group = on_group
        self._on_alone = on_alone
        self._queues: dict[str, list[_Pending]] = {}
        self._running: dict[str, int] = {}  # tenant -> runners (groups in flight)
        self._fresh: dict[str, int] = {}  # tenant -> runners that have not taken a group yet
        self._runners: set[asyncio.Task[None]] = set()

    async def transfer(self, ctx: Context, request: NewTransfer) -> Transfer:
        """`service.transfer`, committed in a group."""
        return (await self.transfer_many(ctx, [request]))[0]

    async def transfer_many(self, ctx: Context, requests: Sequence[NewTransfer]) -> list[Transfer]:
        """`service.transfer_many` (linked: all or nothing), committed in a group."""
        if not requests:
            return []
        check_linked(requests)  # a malformed request is refused before it queues
        future: asyncio.Future[list[Transfer]] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # a refusal nobody waits for any more is fine
        tenant_id = ctx.tenant_id
        self._queues.setdefault(tenant_id, []).append(_Pending(Linked(ctx, list(requests)), future))
        if self._running.get(tenant_id, 0) < self._in_flight:
            self._start(tenant_id)
        # A client that leaves does not cancel the group: what it holds still commits, and
        # a retry with the same ids is answered with the stored transfers.
        return await asyncio.shield(future)

    async def close(self) -> None:
        """Let the groups in hand commit (at shutdown)."""
        while self._runners:
            await asyncio.gather(*self._runners)

    def _start(self, tenant_id: str) -> None:
        self._running[tenant_id] = self._running.get(tenant_id, 0) + 1
        self._fresh[tenant_id] = self._fresh.get(tenant_id, 0) + 1
        runner = asyncio.create_task(self._drain(tenant_id))
        self._runners.add(runner)
        runner.add_done_callback(self._runners.discard)

    async def _drain(self, tenant_id: str) -> None:
        first = True
        try:
            while group := self._take(tenant_id, first=first):
                first = False
                await self._settle(group)
        finally:
            self._running[tenant_id] -= 1
            if not self._running[tenant_id]:
                del self._running[tenant_id]
                self._fresh.pop(tenant_id, None)
                if not self._queues.get(tenant_id):
                    self._queues.pop(tenant_id, None)

    def _take(self, tenant_id: str, *, first: bool) -> list[_Pending]:
        """The next group: the tenant's queued requests in arrival order, up to MAX_GROUP
        transfers (a longer linked batch alone), shared evenly with the runners started
        for the same arrivals that have not taken theirs yet (when more than one group
        may be in flight: `in_flight=2`)."""
        if first:
            self._fresh[tenant_id] -= 1
        queue = self._queues.get(tenant_id)
        if not queue:
            return []
        share = -(-len(queue) // (self._fresh.get(tenant_id, 0) + 1))
        size, count = 0, 0
        for pending in queue[:share]:
            if count and size + len(pending.request.transfers) > MAX_GROUP:
                break
            size += len(pending.request.transfers)
            count += 1
        group, self._queues[tenant_id] = queue[:count], queue[count:]
        return group

    async def _settle(self, group: list[_Pending]) -> None:
        self._on_group(len(group))
        try:
            answers = await self._run_group([pending.request for pending in group])
        except Exception as error:  # the group as a whole failed: each request alone
            log.warning(
                "ledger group of %d failed as a whole (%s); applying each alone",
                len(group),
                error,
                extra={"group": len(group), "error": type(error).__name__},
            )
            self._on_alone(len(group))
            for pending in group:
                await self._alone(pending)
            return
        for pending, answer in zip(group, answers, strict=True):
            if pending.future.done():
                continue
            if isinstance(answer, BaseException):
                pending.future.set_exception(answer)
            else:
                pending.future.set_result(answer)

    async def _run_group(self, requests: list[Linked]) -> list[service.Answer]:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._database.transaction() as session:
                    return await service.transfer_group(session, requests)
            except GroupRaced:
                if attempt == ATTEMPTS:
                    raise
                log.debug("ledger group of %d raced on an id; runs again", len(requests))
        raise AssertionError("unreachable")

    async def _alone(self, pending: _Pending) -> None:
        request = pending.request
        try:
            async with self._database.transaction() as session:
                answer = await service.transfer_many(session, request.ctx, request.transfers)
        except Exception as error:
            if not pending.future.done():
                pending.future.set_exception(error)
            return
        if not pending.future.done():
            pending.future.set_result(answer)


def _retrieve(future: asyncio.Future[list[Transfer]]) -> None:
    if not future.cancelled():
        future.exception()
