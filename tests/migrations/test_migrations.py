"""Migrations move data that is there, not only empty schemas: a database that an older
release filled is upgraded, and downgraded, with nothing lost and no key left dangling."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from billfold.kit.db import async_url
from billfold.kit.migrate import alembic_config, upgrade
from tests.conftest import POSTGRES_URL, _admin_execute

CREATED = datetime(2026, 5, 1, 10, 0)  # naive: UTC, as the tables store it on SQLite


@pytest.fixture
def scratch_url(backend: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database of its own, for a test that migrates step by step."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="billfold-migrations-") as folder:
            yield f"sqlite:///{Path(folder) / 'old.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips, or fails under CI, without PostgreSQL
    name = f"billfold_migrations_{secrets.token_hex(4)}"
    asyncio.run(_admin_execute(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_admin_execute(POSTGRES_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


def sql(url: str, statement: str, **values: Any) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.begin() as connection:
                result = await connection.execute(text(statement), values)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def columns(url: str, table: str) -> set[str]:
    async def run() -> set[str]:
        engine = create_async_engine(async_url(url))
        try:
            async with engine.connect() as connection:
                found = await connection.run_sync(lambda c: inspect(c).get_columns(table))
                return {column["name"] for column in found}
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_catalog_revisions_move_out_of_a_filled_tenants_table_and_back(
    scratch_url: str,
) -> None:
    upgrade(scratch_url, "0006")  # the release before: the revision is a tenants column
    for tenant, revision in (("ten_applied", 3), ("ten_fresh", 0)):
        sql(
            scratch_url,
            "INSERT INTO tenants (id, slug, name, catalog_revision, created_at) "
            "VALUES (:id, :id, :id, :revision, :created)",
            id=tenant,
            revision=revision,
            created=CREATED,
        )
        sql(  # rows that reference the tenant, so rebuilding tenants must keep them valid
            scratch_url,
            "INSERT INTO event_chain_heads (tenant_id, seq, hash) VALUES (:id, 0, :hash)",
            id=tenant,
            hash="0" * 64,
        )
    sql(
        scratch_url,
        "INSERT INTO api_keys (id, tenant_id, name, scope, secret_hash, created_at) "
        "VALUES ('key_1', 'ten_applied', 'admin', 'admin', :hash, :created)",
        hash="a" * 64,
        created=CREATED,
    )

    upgrade(scratch_url, "head")
    assert "catalog_revision" not in columns(scratch_url, "tenants")
    assert sql(scratch_url, "SELECT tenant_id, revision FROM catalogs") == [("ten_applied", 3)]
    assert sql(scratch_url, "SELECT id, tenant_id FROM api_keys") == [("key_1", "ten_applied")]
    assert sql(scratch_url, "SELECT count(*) FROM event_chain_heads") == [(2,)]

    command.downgrade(alembic_config(scratch_url), "0006")
    assert sql(scratch_url, "SELECT id, catalog_revision FROM tenants ORDER BY id") == [
        ("ten_applied", 3),
        ("ten_fresh", 0),
    ]
    upgrade(scratch_url, "head")  # and up again, as a rolled-back release is re-applied
    assert sql(scratch_url, "SELECT tenant_id, revision FROM catalogs") == [("ten_applied", 3)]


def test_plans_for_sale_and_feature_codes_keep_what_was_there(scratch_url: str) -> None:
    """Migration 0012: existing plans are for sale and existing batches keep their plan;
    going back drops only the batches that grant a feature (no plan to fall back on)."""
    before = ScriptDirectory.from_config(alembic_config(scratch_url)).get_revision("0012")
    assert before is not None
    previous = str(before.down_revision)
    upgrade(scratch_url, previous)
    statements = [
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ('ten_1', 't', 'T', :created)",
        "INSERT INTO plans (id, tenant_id, key, is_default, created_at) "
        "VALUES ('pln_1', 'ten_1', 'beta', false, :created)",
        "INSERT INTO claim_batches (id, tenant_id, plan_id, source, max_redemptions, "
        "code_count, metadata, created_at) "
        "VALUES ('clb_1', 'ten_1', 'pln_1', 'claim', 1, 0, '{}', :created)",
    ]
    for statement in statements:
        sql(scratch_url, statement, created=CREATED)

    upgrade(scratch_url, "0012")
    assert sql(scratch_url, "SELECT key, for_sale FROM plans") == [("beta", True)]
    assert sql(scratch_url, "SELECT id, plan_id, feature_key FROM claim_batches") == [
        ("clb_1", "pln_1", None)
    ]
    sql(
        scratch_url,
        "INSERT INTO claim_batches (id, tenant_id, feature_key, feature_value, source, "
        "max_redemptions, code_count, metadata, created_at) "
        "VALUES ('clb_2', 'ten_1', 'devmode.enabled', 'true', 'claim', 1, 0, '{}', :created)",
        created=CREATED,
    )
    with pytest.raises(IntegrityError, match=r"(?i)check"):  # a plan or a feature, never both
        sql(scratch_url, "UPDATE claim_batches SET plan_id = 'pln_1' WHERE id = 'clb_2'")

    command.downgrade(alembic_config(scratch_url), previous)
    assert "for_sale" not in columns(scratch_url, "plans")
    assert sql(scratch_url, "SELECT id, plan_id FROM claim_batches") == [("clb_1", "pln_1")]
    upgrade(scratch_url, "head")


def test_the_migrated_schema_has_exactly_the_registrys_tables(scratch_url: str) -> None:
    """What `billfold.tables` registers is what the migrations build, so Alembic's
    autogenerate (DEVELOPERS.md) finds nothing to add or drop. Read in a fresh interpreter
    that imports only the registry, as migrations/env.py does: in this one, other modules
    have put their tables on the metadata already."""
    program = (
        "import json, billfold.tables\n"
        "from billfold.kit.db import metadata\n"
        "print(json.dumps({n: sorted(c.name for c in t.columns) "
        "for n, t in metadata.tables.items()}))"
    )
    printed = subprocess.run(  # noqa: S603 (this interpreter, a fixed program)
        [sys.executable, "-c", program], check=True, capture_output=True, text=True
    ).stdout
    declared = {name: set(names) for name, names in json.loads(printed).items()}

    upgrade(scratch_url, "head")

    async def run() -> dict[str, set[str]]:
        engine = create_async_engine(async_url(scratch_url))
        try:
            async with engine.connect() as connection:

                def read(sync: Any) -> dict[str, set[str]]:
                    found = inspect(sync)
                    return {
                        table: {column["name"] for column in found.get_columns(table)}
                        for table in found.get_table_names()
                        if table != "alembic_version"
                    }

                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    assert asyncio.run(run()) == declared


def test_every_migration_since_0008_goes_down_and_up_again(scratch_url: str) -> None:
    """A rolled-back release: head, with rows in this release's tables, down to 0008 and
    up to head again, on both backends."""
    upgrade(scratch_url, "head")
    statements = [
        "INSERT INTO tenants (id, slug, name, created_at) VALUES ('ten_1', 't', 'T', :created)",
        "INSERT INTO plans (id, tenant_id, key, is_default, for_sale, created_at) "
        "VALUES ('pln_1', 'ten_1', 'beta', false, false, :created)",
        "INSERT INTO claim_batches (id, tenant_id, feature_key, feature_value, source, "
        "max_redemptions, code_count, metadata, created_at) "
        "VALUES ('clb_2', 'ten_1', 'devmode.enabled', 'true', 'claim', 1, 0, '{}', :created)",
        "INSERT INTO event_chain_heads (tenant_id, seq, hash, keyed_from, mac) "
        "VALUES ('ten_1', 0, 'h', 1, 'm')",
        "INSERT INTO ingest_dead_letters (fingerprint, kind, raw, error, first_seen_at, "
        "last_seen_at, attempts) VALUES ('f', 'invalid', 'x', 'bad', :created, :created, 1)",
        "INSERT INTO gauge_meters (tenant_id, meter_key, definition, catalog_revision) "
        "VALUES ('ten_1', 'seats', '{}', 1)",
        "INSERT INTO gauge_values (tenant_id, meter_key, customer, value) "
        "VALUES ('ten_1', 'seats', 'c', '2')",
        "INSERT INTO change_feed (topic) VALUES ('catalog:ten_1')",
    ]
    for statement in statements:
        sql(scratch_url, statement, created=CREATED)

    command.downgrade(alembic_config(scratch_url), "0008")
    assert sql(scratch_url, "SELECT version_num FROM alembic_version") == [("0008",)]
    upgrade(scratch_url, "head")
    assert sql(scratch_url, "SELECT id FROM plans") == [("pln_1",)]
