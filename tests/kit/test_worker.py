"""The workers' runner: a bounded batch at a time, backing off while failing, and
stopping after the batch in hand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from billfold.kit.worker import Backoff, Runner

pytestmark = pytest.mark.anyio


class Script:
    """A source that fails its first `failures` batches, then succeeds."""

    def __init__(self, failures: int, stop_after: int, take_failures: int = 0) -> None:
        self.failures = failures
        self.take_failures = take_failures
        self.stop_after = stop_after
        self.handled: list[int] = []
        self.given_back: list[tuple[int, float]] = []
        self.next = 0

    async def take(self, limit: int) -> list[int]:
        if self.take_failures:
            self.take_failures -= 1
            raise ConnectionError("the database went away")
        self.next += 1
        return [self.next] * min(limit, 2)

    async def handle(self, batch: Sequence[int], stop: asyncio.Event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the database went away")
        self.handled.append(batch[0])
        if len(self.handled) == self.stop_after:
            stop.set()

    async def failed(self, batch: Sequence[int], error: Exception, retry_in_s: float) -> None:
        self.given_back.append((batch[0], retry_in_s))


async def test_the_runner_backs_off_while_failing_and_stops_after_the_batch_in_hand() -> None:
    script = Script(failures=3, stop_after=2)
    runner = Runner("test", script, batch=5, backoff=Backoff(initial_s=0.001, factor=2))
    progress = await runner.run(asyncio.Event())
    assert script.given_back == [(1, 0.001), (2, 0.002), (3, 0.004)]  # doubling delays
    assert script.handled == [4, 5]  # then it went on, and stopped after batch 5
    assert (progress.batches, progress.items, progress.failures) == (2, 4, 3)


async def test_the_runner_outlasts_a_source_it_cannot_reach() -> None:
    script = Script(failures=0, stop_after=1, take_failures=2)
    runner = Runner("test", script, batch=5, backoff=Backoff(initial_s=0.001))
    progress = await runner.run(asyncio.Event())
    assert script.handled == [1]  # taking failed twice; then it took and handled
    assert (progress.failures, progress.batches) == (2, 1)
