"""Log lines are JSON (or lines for people), every line logged while serving a request
carries its correlation id, and every request gets one access line, a 500 too."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billfold.app import create_app
from billfold.http.guard import RequestGuard
from billfold.http.metrics import Metrics
from billfold.kit import logs
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

Lines = Callable[[], list[dict[str, Any]]]
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Logging configured as `billfold serve` does, JSON into a buffer; each call of the
    fixture's value returns every line written so far, each parsed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    logs.configure("json", "INFO", buffer)

    def written() -> list[dict[str, Any]]:
        logs.flush()
        return [json.loads(line) for line in buffer.getvalue().splitlines()]

    try:
        yield written
    finally:
        logs.shutdown()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def access_lines(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in found if line["logger"] == "billfold.access"]


async def logs_twice() -> dict[str, bool]:
    log = logging.getLogger("billfold.test")
    log.info("inside the request", extra={"step": 1})
    log.warning("still inside")
    return {"ok": True}


async def fails() -> None:
    raise RuntimeError("something broke that nobody planned for")


def client_with_test_routes(harness: Harness) -> httpx.AsyncClient:
    app = create_app(harness.settings, clock=harness.clock, database=harness.database)
    app.add_api_route("/test/logs", logs_twice, methods=["GET"])
    app.add_api_route("/test/fails", fails, methods=["GET"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://billfold.test")


async def test_every_line_of_a_request_carries_its_correlation_id(
    harness: Harness, lines: Lines
) -> None:
    async with client_with_test_routes(harness) as client:
        first = await client.get("/test/logs", headers={"X-Correlation-Id": "req-1"})
        second = await client.get("/test/logs")
    assert first.status_code == second.status_code == 200
    generated = second.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    found = lines()
    for correlation in ("req-1", generated):
        mine = [line for line in found if line["correlation_id"] == correlation]
        assert [(line["logger"], line["level"], line["message"]) for line in mine] == [
            ("billfold.test", "INFO", "inside the request"),
            ("billfold.test", "WARNING", "still inside"),
            ("billfold.access", "INFO", mine[2]["message"]),
        ]
        assert mine[0]["step"] == 1  # extra fields are fields of the line
        for line in mine:
            assert INSTANT.match(line["timestamp"]), line
            assert list(line)[:4] == ["timestamp", "level", "logger", "message"]


async def test_the_access_line_has_status_duration_and_tenant(
    harness: Harness, lines: Lines
) -> None:
    pinged = await harness.get("/v1/ping", headers={**harness.admin, "X-Request-ID": "lb-7"})
    refused = await harness.get("/v1/ping", headers={"Authorization": "Bearer bfk_nope"})
    missing = await harness.get("/no/such/route")
    assert (pinged.status_code, refused.status_code, missing.status_code) == (200, 401, 404)
    assert pinged.headers["x-correlation-id"] == "lb-7"  # a proxy's request id is kept
    ping, unauthenticated, not_found = access_lines(lines())
    assert ping["message"].startswith("GET /v1/ping 200 ")
    assert ping["method"] == "GET"
    assert ping["path"] == "/v1/ping"
    assert ping["status"] == 200
    assert isinstance(ping["duration_ms"], float)
    assert 0 < ping["duration_ms"] < 60_000
    assert ping["correlation_id"] == "lb-7"
    assert ping["tenant_id"] == harness.tenant_id
    assert unauthenticated["status"] == 401
    assert unauthenticated["tenant_id"] is None  # not known: the key was refused
    assert (not_found["status"], not_found["path"]) == (404, "/no/such/route")
    assert not_found["correlation_id"] == missing.headers["x-correlation-id"]


async def test_a_500_gets_its_error_line_and_its_access_line(
    harness: Harness, lines: Lines
) -> None:
    async with client_with_test_routes(harness) as client:
        response = await client.get("/test/fails", headers={"X-Correlation-Id": "boom-2"})
    assert response.status_code == 500
    mine = [line for line in lines() if line["correlation_id"] == "boom-2"]
    error = next(line for line in mine if line["level"] == "ERROR")
    assert "RuntimeError: something broke" in error["exc_info"]
    (access,) = access_lines(mine)
    assert access["status"] == 500
    assert access["duration_ms"] > 0


@pytest.mark.parametrize("sent", ["x" * 101, "spaces are not allowed", "semi;colon", "é", ""])
async def test_a_correlation_id_out_of_bounds_is_replaced(
    harness: Harness, lines: Lines, sent: str
) -> None:
    response = await harness.get("/healthz", headers={"X-Correlation-Id": sent.encode()})
    generated = response.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    (access,) = access_lines(lines())
    assert access["correlation_id"] == generated


def test_console_lines_are_for_people() -> None:
    buffer = io.StringIO()
    created = datetime(2026, 12, 7, 3, 57, 18, 500_000, tzinfo=UTC).timestamp()
    record = logs.access_record("GET", "/v1/ping", 200, 1.25, "c-1", "t-1", created)
    line = logs.formatter("console", buffer).format(record)
    assert line == (
        "2026-12-07T03:57:18.500Z INFO    billfold.access GET /v1/ping 200 1.2 ms  "
        "method=GET path=/v1/ping status=200 duration_ms=1.25 correlation_id=c-1 tenant_id=t-1"
    )


def test_auto_is_json_unless_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(logs.formatter("auto", io.StringIO()), logs.JsonLines)
    assert isinstance(logs.formatter("auto", Terminal()), logs.ConsoleLines)


def test_a_line_outside_any_request_has_a_null_correlation_id(lines: Lines) -> None:
    logging.getLogger("billfold.worker").info("outbox: handled %d (%d in all)", 3, 10)
    (line,) = lines()
    assert line["message"] == "outbox: handled 3 (10 in all)"
    assert line["correlation_id"] is None


@pytest.mark.parametrize("path", ["/v1/ping", '/v1/customers/a"b\\c/grants', "/v1/é\u2028x"])
@pytest.mark.parametrize("tenant", ["ten_1", None])
def test_the_access_line_written_by_hand_is_the_formatted_record(
    path: str, tenant: str | None
) -> None:
    entry = ("GET", path, 201, 12.34567, "c-9", tenant, 1_796_613_438.0625)
    json_lines = logs.JsonLines()
    fast = json_lines.access(entry)
    assert json.loads(fast) == json.loads(json_lines.format(logs.access_record(*entry)))
    assert json.loads(fast)["message"] == f"GET {path} 201 12.3 ms"
    assert "\n" not in fast


async def test_a_correlation_id_with_a_trailing_newline_is_replaced(lines: Lines) -> None:
    """Straight to the guard: no HTTP client sends a newline in a header, but an ASGI
    server or proxy in front might pass one on, and it would split the log line."""
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-correlation-id", b"forged\n")],
    }
    await RequestGuard(app, max_body_bytes=10, metrics=Metrics())(scope, receive, send)
    echoed = dict(sent[0]["headers"])[b"x-correlation-id"].decode()
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    (access,) = access_lines(lines())
    assert access["correlation_id"] == echoed


@pytest.fixture
def pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A pipe nobody reads yet: its read end, and its write end as a text stream."""
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    try:
        yield read_end, stream
    finally:
        stream.close()
        os.close(read_end)


def fill(fd: int) -> int:
    """Fill the pipe `fd` writes to, as a log reader that stopped reading would."""
    os.set_blocking(fd, False)
    written = 0
    try:
        while True:
            written += os.write(fd, b"." * 65536)
    except BlockingIOError:
        return written
    finally:
        os.set_blocking(fd, True)


def read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunks.append(os.read(fd, 1 << 20))
    except BlockingIOError:
        return b"".join(chunks)
    finally:
        os.set_blocking(fd, True)


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        logs.shutdown()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@pytest.mark.usefixtures("restore_root")
def test_a_stalled_pipe_never_blocks_and_drops_lines_past_the_bound(
    pipe: tuple[int, io.TextIOWrapper],
) -> None:
    read_end, stream = pipe
    logs.configure("json", "INFO", stream)
    logs.access.sink.max_waiting = 5  # type: ignore[union-attr]
    logging.getLogger("billfold.test").info("first")  # no event loop here: written at once
    filled = fill(stream.fileno())
    started = time.monotonic()
    for n in range(20):  # each tries to write, finds the pipe full, and goes on
        logs.access("GET", f"/n/{n}", 200, 0.001, f"c-{n}", None)
    assert logs.flush(0.05) is False  # nothing went, and nothing waited past the timeout
    assert time.monotonic() - started < 5
    written = read_all(read_end)  # the reader catches up
    assert written.count(b"\n") == 1  # "first": the access lines waited, the pipe being full
    assert len(written) == written.index(b"\n") + 1 + filled
    assert logs.flush() is True
    found = [json.loads(line) for line in read_all(read_end).splitlines()]
    # the line the first write took, then the 5 that may wait; the other 14 dropped
    assert [line["path"] for line in found[:6]] == [f"/n/{n}" for n in range(6)]
    assert found[6]["level"] == "WARNING"
    assert found[6]["dropped"] == 14
    assert len(found) == 7


@pytest.mark.usefixtures("restore_root")
async def test_in_an_event_loop_lines_are_written_together_soon_after(
    pipe: tuple[int, io.TextIOWrapper],
) -> None:
    read_end, stream = pipe
    logs.configure("json", "INFO", stream)
    for n in range(3):
        logs.access("GET", f"/n/{n}", 200, 0.001, f"c-{n}", None)
    logging.getLogger("billfold.test").warning("after them")
    assert read_all(read_end) == b""  # not one write a line
    await asyncio.sleep(logs.access.sink.interval_s * 4)  # type: ignore[union-attr]
    found = [json.loads(line) for line in read_all(read_end).splitlines()]
    assert [line.get("path", line["message"]) for line in found] == [
        "/n/0",
        "/n/1",
        "/n/2",
        "after them",
    ]


def test_lines_are_written_whole_to_a_write() -> None:
    lines = [f"line {n:03d} " + "x" * 1000 for n in range(10)] + ["y" * 9000, "z"]
    chunks = logs._chunks(lines, 4096)
    assert b"".join(chunks).decode().splitlines() == lines
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert [len(chunk) <= 4096 for chunk in chunks] == [True, True, True, False, True]


@pytest.mark.usefixtures("restore_root")
def test_a_loop_that_closed_with_a_write_due_does_not_hold_up_the_next(
    pipe: tuple[int, io.TextIOWrapper],
) -> None:
    read_end, stream = pipe
    logs.configure("json", "INFO", stream)

    async def one(path: str, wait: bool) -> None:
        logs.access("GET", path, 200, 0.001, "c-1", None)
        if wait:
            await asyncio.sleep(logs.access.sink.interval_s * 4)  # type: ignore[union-attr]

    asyncio.run(one("/first", wait=False))  # its loop closes before the write is due
    asyncio.run(one("/second", wait=True))
    found = [json.loads(line)["path"] for line in read_all(read_end).splitlines()]
    assert found == ["/first", "/second"]
