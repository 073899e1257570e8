"""`billfold worker ...`: the background workers, each on the shared runner
(`kit/worker.py`). SIGTERM or SIGINT stops one after the batch in hand."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from typing import Annotated

import typer

from billfold.cli.common import SETUP_FAILED, fail, load_settings, run
from billfold.kit import logs
from billfold.kit.clock import SystemClock
from billfold.kit.db import Database
from billfold.kit.outbox import OutboxSource
from billfold.kit.worker import Runner
from billfold.metering import deps as metering_deps

app = typer.Typer(help="Background workers.", no_args_is_help=True)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the worker stops after the batch in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


@app.command("ingest")
def worker_ingest(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="messages per transaction")] = 100,
) -> None:
    """Drain the BILLFOLD_INGEST stream into the store. Run as many as you like.

    SIGTERM or SIGINT stops it after the batch in hand. A worker killed outright leaves
    its batch unacknowledged; another (or the same, restarted) stores it, exactly once."""
    settings = load_settings()
    if not settings.ingest:
        fail("set BILLFOLD_INGEST=nats://host:4222 to run the ingest worker", SETUP_FAILED)
    if not metering_deps.nats_installed():
        fail(metering_deps.NATS_MISSING, SETUP_FAILED)
    logs.configure(settings.log_format, settings.log_level)
    from billfold.metering.stream import WorkerOptions, run_worker

    options = WorkerOptions(
        url=settings.ingest,
        stream=settings.ingest_stream,
        batch=batch,
        late_window=timedelta(seconds=settings.usage_late_window_s),
    )

    async def work(database: Database) -> int:
        stop = _stop_on_signals()
        typer.echo(f"ingest worker: draining {options.stream} from {options.url}")
        return await run_worker(database, options, stop)

    stored = run(work)
    typer.echo(f"ingest worker: stopped after {stored} messages")


@app.command("outbox")
def worker_outbox(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="entries claimed at once")] = 100,
) -> None:
    """Drain the outbox: hand each event-log entry to the workers that act on it, once.

    Run as many as you like; they never share an entry. No handler is registered yet, so
    entries are marked delivered as they come, and deleted after 7 days."""
    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)

    async def work(database: Database) -> int:
        stop = _stop_on_signals()
        source = OutboxSource(database, SystemClock(), handlers={})
        typer.echo("outbox worker: draining the outbox")
        progress = await Runner("outbox", source, batch=batch).run(stop)
        return progress.items

    delivered = run(work)
    typer.echo(f"outbox worker: stopped after handling {delivered} entries")
