"""`billfold payouts ...`: payout batches and their CSV per payee (docs/settlement.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, fail, in_tenant
from billfold.kit.context import Context
from billfold.settlement import payouts
from billfold.settlement.records import PayoutBatch

app = typer.Typer(help="Payout batches: pay out what payees are owed.", no_args_is_help=True)


@app.command("run")
def payouts_run(
    period: Annotated[
        str | None,
        typer.Option(help="the period's label (default: today, UTC, as 2026-06-01)"),
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Make the period's payout batch: pay each payee what its payable account holds,
    per currency. A second run in the same period creates nothing and prints the batch
    made before."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> PayoutBatch:
        return await payouts.run(session, ctx, period or payouts.default_period(ctx))

    batch = in_tenant(tenant, work)
    done = "made" if batch.created else "already made for this period"
    typer.echo(f"{batch.id} ({batch.period}): {done}, {len(batch.lines)} line(s)")
    for line in batch.lines:
        typer.echo(f"  {line.payee}\t{line.currency}\t{line.amount}\t{line.transfer_id}")


@app.command("export")
def payouts_export(
    batch_id: Annotated[str, typer.Argument(help="the batch's id (pob_...)")],
    out: Annotated[Path, typer.Option("--out", help="folder for the CSV files")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Write one CSV per payee of the batch into --out: `<payee>.csv`, one line per
    currency (the same as GET /v1/payouts/{batch}/payees/{payee}.csv)."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> PayoutBatch:
        return await payouts.batch(session, ctx, batch_id)

    batch = in_tenant(tenant, work)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for payee in payouts.payees(batch):
            # Payee ids are letters, digits and _ . -, never starting with a dot: a file name.
            (out / f"{payee}.csv").write_text(payouts.payee_csv(batch, payee), encoding="utf-8")
    except OSError as error:
        fail(f"cannot write to {out}: {error.strerror}")
    typer.echo(f"wrote {len(payouts.payees(batch))} file(s) to {out}")
