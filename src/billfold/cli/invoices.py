"""`billfold invoices run`: period close on demand, with a progress bar."""

from __future__ import annotations

from typing import Annotated

import typer

from billfold.billing import deps as billing_deps
from billfold.billing.run import Report, Step, run
from billfold.cli.common import DEFAULT_TENANT, TenantOption, fail, load_settings, moment
from billfold.cli.common import run as run_with_database
from billfold.kit.clock import SystemClock
from billfold.kit.db import Database
from billfold.tenants import service as tenants

app = typer.Typer(help="Invoices: period close on demand.", no_args_is_help=True)


def describe(report: Report) -> str:
    return (
        f"closed {report.closed} period(s), made {report.invoices} invoice(s), "
        f"finalized {report.finalized}, moved {report.dunned} by dunning, "
        f"{len(report.failed)} failed"
    )


@app.command("run")
def invoices_run(
    until: Annotated[
        str | None, typer.Option(help="close periods that ended by then (default: now)")
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Close every billed period that ended by --until: renew subscriptions, rate usage,
    make draft invoices, and finalize the drafts whose grace has ended. Safe to run
    twice, or again after it was killed: nothing is invoiced twice."""
    settings = load_settings()
    now = SystemClock().now()
    end = moment(until) or now
    if end > now:
        fail(f"--until {end.isoformat()} is in the future; periods close once they end")

    async def work(database: Database) -> Report:
        async with database.transaction(write=False) as session:
            tenant_id = (await tenants.tenant_by_slug(session, tenant)).id
        with typer.progressbar(length=0, label="closing periods", show_pos=True) as bar:

            def step(done: Step) -> None:
                bar.label = f"{'closing periods' if done.phase == 'close' else 'finalizing'}"
                bar.update(1)

            return await run(
                database,
                end,
                now=now,
                settings=billing_deps.wire(settings),
                tenant_id=tenant_id,
                on_step=step,
            )

    report = run_with_database(work)
    typer.echo(describe(report))
    for item, error in report.failed:
        typer.echo(f"failed: {item}: {error}", err=True)
    if report.failed:
        raise typer.Exit(1)
