"""`billfold worker ...`: the background workers, each on the shared runner
(`kit/worker.py`). SIGTERM or SIGINT stops one after the batch in hand."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer
from prometheus_client import CollectorRegistry, Counter, start_http_server

from billfold.cli.common import SETUP_FAILED, fail, load_settings, run
from billfold.kit import logs
from billfold.kit.clock import SystemClock
from billfold.kit.db import Database
from billfold.kit.outbox import OutboxSource
from billfold.kit.worker import Runner
from billfold.metering import deps as metering_deps

if TYPE_CHECKING:
    from billfold.metering.stream import WorkerOptions

app = typer.Typer(help="Background workers.", no_args_is_help=True)


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the worker stops after the batch in hand."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


def _ingest_options(batch: int = 100) -> WorkerOptions:
    from billfold.metering.stream import WorkerOptions

    settings = load_settings()
    return WorkerOptions(
        url=settings.ingest,
        stream=settings.ingest_stream,
        batch=batch,
        late_window=timedelta(seconds=settings.usage_late_window_s),
    )


@app.command("ingest")
def worker_ingest(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="messages per transaction")] = 100,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="serve this worker's Prometheus /metrics here"),
    ] = None,
) -> None:
    """Drain the BILLFOLD_INGEST stream into the store. Run as many as you like.

    SIGTERM or SIGINT stops it after the batch in hand. A worker killed outright leaves
    its batch unacknowledged; another (or the same, restarted) stores it, exactly once.
    An event the store refuses is parked in the dead letters (`billfold worker
    dead-letters`), and the rest of its message is stored."""
    settings = load_settings()
    if not settings.ingest:
        fail("set BILLFOLD_INGEST=nats://host:4222 to run the ingest worker", SETUP_FAILED)
    if not metering_deps.nats_installed():
        fail(metering_deps.NATS_MISSING, SETUP_FAILED)
    logs.configure(settings.log_format, settings.log_level)
    from billfold.metering.stream import DeadLetterMetrics, run_worker

    options = _ingest_options(batch)
    registry = CollectorRegistry()
    metrics = DeadLetterMetrics(registry)
    if metrics_port is not None:
        start_http_server(metrics_port, addr="0.0.0.0", registry=registry)  # noqa: S104 (scraped from outside)

    async def work(database: Database) -> int:
        stop = _stop_on_signals()
        typer.echo(f"ingest worker: draining {options.stream} from {options.url}", nl=True)
        sys.stdout.flush()
        return await run_worker(database, options, stop, clock=SystemClock(), metrics=metrics)

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


@app.command("billing")
def worker_billing(
    metrics_port: Annotated[
        int | None, typer.Option(help="serve Prometheus /metrics on this port")
    ] = None,
) -> None:
    """Period close on a schedule: every BILLFOLD_BILLING_INTERVAL_S, close the billed
    periods that have ended and finalize the drafts whose grace has ended, for every
    tenant. Run one or several: they never invoice a period twice."""
    from billfold.billing import deps as billing_deps
    from billfold.billing.run import run as close_periods
    from billfold.cli.invoices import describe

    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)
    registry = CollectorRegistry()
    failures = Counter(
        "billfold_period_close_failures",
        "Subscriptions (phase=close, dunning) or drafts (phase=finalize) whose period close "
        "failed and was rolled back, to be tried again at the next run",
        ["phase"],
        registry=registry,
    )
    runs = Counter("billfold_period_close_runs", "Period-close runs", registry=registry)
    for phase in ("close", "finalize", "dunning"):
        failures.labels(phase)
    if metrics_port is not None:
        start_http_server(metrics_port, registry=registry)

    close = billing_deps.wire(settings)  # the invoicing file is read once, at start

    async def work(database: Database) -> int:
        stop = _stop_on_signals()
        clock = SystemClock()
        invoiced = 0
        typer.echo(f"billing worker: closing periods every {settings.billing_interval_s}s")
        while not stop.is_set():
            now = clock.now()
            report = await close_periods(
                database,
                now,
                now=now,
                settings=close,
                on_failure=lambda phase: failures.labels(phase).inc(),
            )
            runs.inc()
            invoiced += report.invoices
            if report.closed or report.finalized or report.failed:
                typer.echo(f"billing worker: {describe(report)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.billing_interval_s)
        return invoiced

    invoiced = run(work)
    typer.echo(f"billing worker: stopped after making {invoiced} invoices")


@app.command("wallets")
def worker_wallets(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="tenants taken at once")] = 10,
    idle_s: Annotated[
        float, typer.Option(min=0.1, max=3600, help="seconds to wait when nothing is due")
    ] = 5.0,
) -> None:
    """The wallet expiry job, continuously: for each tenant with something due, release
    holds whose timeout passed (and any other timed-out pending ledger transfer) and move
    expired wallet credit to breakage. Run one or several: each thing is done once."""
    from billfold.wallets.expiry import ExpirySource

    settings = load_settings()
    logs.configure(settings.log_format, settings.log_level)

    async def work(database: Database) -> str:
        stop = _stop_on_signals()
        source = ExpirySource(database, SystemClock(), idle_s=idle_s)
        typer.echo("wallets worker: expiring holds and wallet credit")
        await Runner("wallets", source, batch=batch).run(stop)
        return source.report.describe()

    typer.echo(f"wallets worker: stopped after {run(work)}")


letters_app = typer.Typer(
    help="What the ingest worker could not store: read, replay, drop.", no_args_is_help=True
)
app.add_typer(letters_app, name="dead-letters")


@letters_app.command("list")
def dead_letters_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="rows to show")] = 100,
) -> None:
    """The parked events and messages, oldest first: id, kind, tenant, key, attempts,
    first and last seen, the error, and what was sent (escaped)."""
    from billfold.metering import deadletters

    async def work(database: Database) -> list[Any]:
        async with database.transaction(write=False) as session:
            return list(await deadletters.listing(session, limit=limit))

    rows = run(work)
    for row in rows:
        typer.echo(
            f"{row.id}\t{row.kind}\ttenant={row.tenant_id}\tkey={row.idempotency_key}\t"
            f"attempts={row.attempts}\tfirst={row.first_seen_at.isoformat()}\t"
            f"last={row.last_seen_at.isoformat()}\tmessage={row.message_id}\n"
            f"\terror: {row.error}\n\traw: {row.raw[:1000]}"
        )
    typer.echo(f"{len(rows)} dead letter(s)")


@letters_app.command("replay")
def dead_letters_replay(
    letter_id: Annotated[int | None, typer.Argument(help="the dead letter's id")] = None,
    every: Annotated[bool, typer.Option("--all", help="replay every dead letter")] = False,
) -> None:
    """Ingest dead letters again (after a fix): one stored is removed; one refused again
    stays, with one more attempt and its new error. Exit 1 if any stays."""
    if (letter_id is None) == (not every):
        fail("give one dead letter's id, or --all", code=2)
    if not metering_deps.nats_installed():
        fail(metering_deps.NATS_MISSING, SETUP_FAILED)
    from billfold.metering import deadletters
    from billfold.metering.stream import replay

    options = _ingest_options()

    async def work(database: Database) -> list[tuple[int, str | None]]:
        if letter_id is not None:
            wanted = [letter_id]
        else:
            async with database.transaction(write=False) as session:
                wanted = await deadletters.ids(session)
        clock = SystemClock()
        return [(i, await replay(database, i, options, clock.now())) for i in wanted]

    outcomes = run(work)
    for found_id, outcome in outcomes:
        typer.echo(f"{found_id}: {outcome or 'no such dead letter'}")
    if any(outcome != "stored" for _id, outcome in outcomes):
        raise typer.Exit(1)


@letters_app.command("drop")
def dead_letters_drop(
    letter_id: Annotated[int, typer.Argument(help="the dead letter's id")],
) -> None:
    """Forget a dead letter for good (its event is never stored)."""
    from billfold.metering import deadletters

    async def work(database: Database) -> bool:
        async with database.transaction() as session:
            return await deadletters.drop(session, letter_id)

    if not run(work):
        fail(f"no dead letter {letter_id}")
    typer.echo(f"dropped {letter_id}")
