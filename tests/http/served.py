"""The real server, `billfold serve`, in a subprocess on a free port of 127.0.0.1: for the
tests that need a browser or a client outside the process (docs pages, schemathesis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import SECRET_KEY

BILLFOLD = Path(sys.executable).parent / "billfold"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(database_url: str, *, timeout_s: float = 30.0) -> Iterator[str]:
    """Serve `database_url` (already migrated) and yield the base URL; stop it after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env.update(BILLFOLD_DATABASE_URL=database_url, BILLFOLD_SECRET_KEY=SECRET_KEY.decode())
    process = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"billfold serve exited: {process.communicate()[0]}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"billfold serve did not answer on {base} in {timeout_s}s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
