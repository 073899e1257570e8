"""`billfold plans ...`: validate, diff and apply a plans file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import service as catalog_service
from billfold.catalog.catalog import Catalog
from billfold.catalog.plansfile import CatalogSpec, PlansFileError
from billfold.cli.common import (
    DEFAULT_TENANT,
    TenantOption,
    in_tenant,
    load_plans,
    load_settings,
    run,
)
from billfold.kit.context import Context
from billfold.kit.db import Database
from billfold.tenants import repository as tenants_repository

app = typer.Typer(help="Plans files: validate, diff, apply.", no_args_is_help=True)
PlansFile = Annotated[Path, typer.Argument(help="the plans file (YAML), e.g. examples/plans.yaml")]


@app.command("validate")
def plans_validate(
    file: PlansFile,
    tenant: TenantOption = DEFAULT_TENANT,
    offline: Annotated[
        bool, typer.Option("--offline", help="check the file alone, not the stored catalog")
    ] = False,
) -> None:
    """Check a plans file; print every problem with its path. Unless --offline, also
    check it against the tenant's stored catalog, as `plans diff` and `apply` would."""
    spec = load_plans(file)
    summary = f"{len(spec.features)} features, {len(spec.plans)} plans"
    compared = "" if offline else _compare(tenant, spec)
    if compared.startswith("error:"):
        typer.echo(compared.removeprefix("error:"), err=True)
        typer.echo(f"{file}: refused by the stored catalog of tenant {tenant!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{file}: ok ({summary}){compared}")


def _compare(slug: str, spec: CatalogSpec) -> str:
    """What the stored catalog says of `spec`: "error:" and its problems, or a note on
    what it was checked against. A database that is not there is a note, not a failure:
    the file can be validated where no database runs (a product's own CI)."""
    url = make_url(load_settings().database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return f"; not compared with a stored catalog: no database at {url.database}"
    return run(lambda database: _against_stored(database, slug, spec))


async def _against_stored(database: Database, slug: str, spec: CatalogSpec) -> str:
    try:
        async with database.transaction(write=False) as session:
            found = await tenants_repository.by_slug(session, slug)
            if found is None:
                return f"; not compared with a stored catalog: no tenant {slug!r}"
            stored, archived = await catalog_service.stored(session, found.id)
    except (DBAPIError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return f"; not compared with a stored catalog: the database did not answer ({reason})"
    problems = catalog_service.conflicts(stored, archived, spec)
    if problems:
        return "error:" + "\n".join(problems)
    return f"; fits the stored catalog of tenant {slug!r} (revision {stored.revision})"


@app.command("diff")
def plans_diff(file: PlansFile, tenant: TenantOption = DEFAULT_TENANT) -> None:
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
def plans_apply(file: PlansFile, tenant: TenantOption = DEFAULT_TENANT) -> None:
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
