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

    def __init__(self, failures: int, stop_after: int) -> None:
        self.failures = failures
        self.stop_after = stop_after
        self.handled: list[int] = []
        self.given_back: list[tuple[int, float]] = []
        self.next = 0

    async def take(self, limit: int) -> list[int]:
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
