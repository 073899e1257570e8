"""One bounded loop for every background worker (ingest, the outbox, and later webhooks,
period close and dunning).

A worker's `Source` takes a batch of at most `batch` items (waiting up to about a second
when there is none), handles it, and says what to do when handling failed. The runner
repeats that until it is told to stop, and then stops after the batch in hand: a batch is
either handled or given back, never dropped. A failing batch is given back with a delay
that doubles with each failure in a row, up to `Backoff.max_s`, so that a database that
went away is not hammered, and the runner goes on when it comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("billfold.worker")

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """How long to wait before trying again after `attempt` failures in a row."""

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 60.0

    def delay_s(self, attempt: int) -> float:
        return float(min(self.max_s, self.initial_s * self.factor ** max(attempt - 1, 0)))


class Source(Protocol[T]):
    async def take(self, limit: int) -> Sequence[T]:
        """Up to `limit` items, or none after a short wait (about a second)."""
        ...

    async def handle(self, batch: Sequence[T], stop: asyncio.Event) -> None:
        """Do the work of `batch`. A source whose items are independent handles them one
        by one and gives back those it has not begun when `stop` is set."""
        ...

    async def failed(self, batch: Sequence[T], error: Exception, retry_in_s: float) -> None:
        """`handle` raised: give the batch back, to be tried again in `retry_in_s`."""
        ...


@dataclass
class Progress:
    batches: int = 0
    items: int = 0
    failures: int = 0


class Runner(Generic[T]):
    """Runs a `Source` until `stop` is set, one batch at a time."""

    def __init__(
        self, name: str, source: Source[T], *, batch: int, backoff: Backoff | None = None
    ) -> None:
        if not 1 <= batch <= 10_000:
            raise ValueError(f"a batch holds 1 to 10,000 items, not {batch}")
        self.name = name
        self._source = source
        self._batch = batch
        self._backoff = backoff or Backoff()
        self.progress = Progress()

    async def run(self, stop: asyncio.Event) -> Progress:
        failed_in_a_row = 0
        while not stop.is_set():
            batch: Sequence[T] = ()
            try:
                batch = await self._source.take(self._batch)
                if not batch:
                    failed_in_a_row = 0  # the source answered: the next failure starts over
                    continue
                await self._source.handle(batch, stop)
            except Exception as error:
                failed_in_a_row += 1
                self.progress.failures += 1
                delay_s = self._backoff.delay_s(failed_in_a_row)
                log.exception(
                    "%s: %s failed (%d in a row); trying again in %.1f s",
                    self.name,
                    f"a batch of {len(batch)}" if batch else "taking a batch",
                    failed_in_a_row,
                    delay_s,
                )
                if batch:
                    await self._give_back(batch, error, delay_s)
                await _sleep(delay_s, stop)
                continue
            failed_in_a_row = 0
            self.progress.batches += 1
            self.progress.items += len(batch)
            log.info("%s: handled %d (%d in all)", self.name, len(batch), self.progress.items)
        return self.progress

    async def _give_back(self, batch: Sequence[T], error: Exception, delay_s: float) -> None:
        """Hand a failed batch back; if even that fails (the database is gone), its
        claims lapse on their own, so the worker only says so and goes on."""
        try:
            await self._source.failed(batch, error, delay_s)
        except Exception:
            log.exception("%s: could not give back a batch of %d", self.name, len(batch))


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
