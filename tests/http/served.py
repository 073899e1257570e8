"""The real server, `billfold serve`, in a subprocess on a free port of 127.0.0.1: for the
tests that need a browser or a client outside the process (docs pages, schemathesis)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
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
    # The server's log goes to a file: a pipe nobody reads would fill and stall it.
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.seek(0)
        return log.read()[-4000:]

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"billfold serve exited: {output()}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"billfold serve did not answer on {base}: {output()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
