"""What the access log costs a request: the request guard around an app that answers at
once, called directly (no server, no socket), with access lines off and on.

Run: `.venv/bin/python bench/access_log.py [--requests 200000] [--rounds 5]`.

"on" is what `billfold serve` runs: JSON lines through the sink of `billfold.kit.logs`
into /dev/null, written in batches from the event loop (decision 0027); the clock stops
once the last line is written. "off" is BILLFOLD_LOG_LEVEL=WARNING, which still sets the
guard's correlation id context variable. The process's CPU time is counted, every
thread's. The difference is the cost of a line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from typing import Any

from billfold.http.guard import RequestGuard
from billfold.http.metrics import Metrics
from billfold.kit import logs

SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/v1/entitlements/check",
    "headers": [(b"x-correlation-id", b"bench-0123456789"), (b"content-length", b"2")],
}


async def answer(scope: Any, receive: Any, send: Any) -> None:
    scope["state"]["tenant_id"] = "ten_kqufnwopb6hnka3yufehrp4kl5"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"{}", "more_body": False}


async def send(_message: Any) -> None:
    return None


async def loop(guard: RequestGuard, requests: int) -> float:
    """CPU time of this process (every thread) per request, in µs: on a shared machine
    wall time also counts the other processes' turns."""
    started = time.process_time()
    for _ in range(requests):
        await guard(dict(SCOPE), receive, send)
    logs.flush(60)  # the clock stops once every line is written
    return (time.process_time() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    guard = RequestGuard(answer, max_body_bytes=1_048_576, metrics=Metrics())
    results: dict[str, list[float]] = {"off": [], "on": []}
    with open(os.devnull, "w", encoding="utf-8") as null:
        logs.configure("json", "INFO", null)
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                logging.getLogger().setLevel(logging.WARNING if mode == "off" else logging.INFO)
                results[mode].append(asyncio.run(loop(guard, args.requests)))
        logs.shutdown()
    off, on = min(results["off"]), min(results["on"])
    paired = zip(results["off"], results["on"], strict=True)
    median = statistics.median(b - a for a, b in paired)
    print(f"guard, access lines off: {off:6.2f} µs/request (best of {args.rounds})")
    print(f"guard, access lines on:  {on:6.2f} µs/request")
    print(f"an access line costs:    {on - off:6.2f} µs/request (median of rounds: {median:.2f})")


if __name__ == "__main__":
    main()
