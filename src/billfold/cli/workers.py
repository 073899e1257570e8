"""`billfold worker ...`: the background workers."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import typer

from billfold.cli.common import fail, load_settings, run
from billfold.kit.db import Database

app = typer.Typer(help="Background workers.", no_args_is_help=True)


@app.command("ingest")
def worker_ingest(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="messages per transaction")] = 100,
) -> None:
    """Drain the BILLFOLD_INGEST stream into the store. Run as many as you like.

    SIGTERM or SIGINT stops it after the batch in hand. A worker killed outright leaves
    its batch unacknowledged; another (or the same, restarted) stores it, exactly once."""
    import signal

    from billfold.metering.stream import WorkerOptions, run_worker

    settings = load_settings()
    if not settings.ingest:
        fail("set BILLFOLD_INGEST=nats://host:4222 to run the ingest worker")
    options = WorkerOptions(
        url=settings.ingest,
        stream=settings.ingest_stream,
        batch=batch,
        late_window=timedelta(seconds=settings.usage_late_window_s),
    )

    async def work(database: Database) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        typer.echo(f"ingest worker: draining {options.stream} from {options.url}")
        return await run_worker(database, options, stop)

    stored = run(work)
    typer.echo(f"ingest worker: stopped after {stored} messages")
