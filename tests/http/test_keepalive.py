"""A 500 is an answer like any other: the keep-alive connection it came on stays open."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from billfold.app import create_app
from tests.conftest import assert_problem, make_settings

# Databases nobody can reach: every request that needs one fails unexpectedly (a 500).
UNREACHABLE = {
    "sqlite": "sqlite:///{folder}",  # a folder, not a database file
    "postgresql": "postgresql://postgres@127.0.0.1:1/billfold",
}


@pytest.fixture
def server(backend: str, tmp_path: Path) -> Iterator[str]:
    """A real uvicorn server, on a port of its own, of an app whose database is down."""
    url = UNREACHABLE[backend].format(folder=tmp_path)
    app = create_app(make_settings(url))
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    config = uvicorn.Config(app, log_level="critical", lifespan="on", timeout_keep_alive=30)
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        running.should_exit = True
        thread.join(10)
        listening.close()


def local_address(response: httpx.Response) -> tuple[str, int]:
    stream = response.extensions["network_stream"]
    return tuple(stream.get_extra_info("client_addr"))  # type: ignore[return-value]


def test_the_connection_outlives_a_500(server: str) -> None:
    with httpx.Client(base_url=server, limits=httpx.Limits(max_connections=1)) as client:
        failed = client.get("/readyz", headers={"X-Correlation-Id": "down-1"})
        body = assert_problem(failed, 500, "internal_error")
        assert body["correlation_id"] == "down-1"
        first = local_address(failed)
        assert failed.headers["x-correlation-id"] == "down-1"
        assert failed.headers.get("connection", "").lower() != "close"
        after = client.get("/healthz")
        assert after.status_code == 200, after.text
        # The same connection carried both.
        assert local_address(after) == first
        again = client.get("/readyz")
        assert_problem(again, 500, "internal_error")
        assert local_address(again) == first
        metrics = client.get("/metrics").text
    assert 'billfold_unhandled_errors_total{route="/readyz"} 2.0' in metrics
