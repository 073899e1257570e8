"""Alembic environment: runs the migrations through Billfold's own async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import billfold.tables  # noqa: F401  (registers every table on the metadata)
from billfold.kit.db import Database, metadata

config = context.config


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch migration rebuilds a table (copy, drop, rename): with foreign keys on,
        # dropping a table that others reference fails. SQLite honours the pragma only
        # outside a transaction, so it goes to the driver before the migrations begin;
        # `foreign_key_check` below proves nothing was left dangling.
        _pragma(connection, "PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"the migration left rows without their parents: {broken}")


def _pragma(connection: Connection, statement: str) -> None:
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(statement)
    finally:
        cursor.close()


async def _main() -> None:
    database = Database(config.get_main_option("sqlalchemy.url") or "")
    try:
        async with database.engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `billfold migrate`")
asyncio.run(_main())
