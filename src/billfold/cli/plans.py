"""`billfold plans ...`: validate, diff and apply a plans file."""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import service as catalog_service
from billfold.catalog.catalog import Catalog
from billfold.catalog.plansfile import PlansFileError
from billfold.cli.common import DEFAULT_TENANT, TenantOption, in_tenant, load_plans
from billfold.kit.context import Context

app = typer.Typer(help="Plans files: validate, diff, apply.", no_args_is_help=True)


@app.command("validate")
def plans_validate(file: Path) -> None:
    """Check a plans file; print every problem with its path."""
    spec = load_plans(file)
    typer.echo(f"{file}: ok ({len(spec.features)} features, {len(spec.plans)} plans)")


@app.command("diff")
def plans_diff(file: Path, tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Show what `plans apply` would change."""
    spec = load_plans(file)

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        stored, archived = await catalog_service.stored(session, ctx.tenant_id)
        try:
            typer.echo(catalog_service.diff(stored, archived, spec).render())
        except PlansFileError as error:
            for line in error.errors:
                typer.echo(line, err=True)
            raise typer.Exit(1) from None

    in_tenant(tenant, work)


@app.command("apply")
def plans_apply(file: Path, tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Store new immutable plan versions for whatever changed."""
    spec = load_plans(file)

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        try:
            changes, revision = await catalog_service.apply(session, ctx, spec)
        except PlansFileError as error:
            for line in error.errors:
                typer.echo(line, err=True)
            raise typer.Exit(1) from None
        typer.echo(changes.render())
        if not changes.empty:
            typer.echo(f"applied: catalog revision {revision}")

    in_tenant(tenant, work)
