"""Small SQL helpers that need to know which backend they talk to."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_insert(session: AsyncSession, table: Table) -> Any:
    """An INSERT that knows `on_conflict_do_nothing/do_update` on PostgreSQL and SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def update_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str] = ("id",),
) -> None:
    """Update many rows by one statement (run for each row): each row names its `keys`
    and the same columns to set."""
    if not rows:
        return
    columns = [name for name in rows[0] if name not in keys]
    statement = (
        update(table)
        .where(*(table.c[key] == bindparam(f"_{key}") for key in keys))
        .values({name: bindparam(f"_{name}") for name in columns})
    )
    await session.execute(statement, [{f"_{n}": v for n, v in row.items()} for row in rows])
