"""Test harness: every test runs on SQLite and on PostgreSQL, against a schema built by
running the migrations. Each test gets a tenant of its own, so tests never see each
other's rows and need no cleanup."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import hypothesis
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from billfold.app import create_app
from billfold.catalog import plansfile
from billfold.catalog import service as catalog_service
from billfold.kit.clock import FrozenClock
from billfold.kit.context import Context
from billfold.kit.db import Database, async_url
from billfold.kit.migrate import upgrade
from billfold.settings import Settings
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope
from tests import factories

ROOT = Path(__file__).resolve().parent.parent
# The tests' own plans file, never examples/plans.yaml: the README tour edits the example.
PLANS = ROOT / "tests" / "fixtures" / "plans.yaml"
POSTGRES_URL = os.environ.get(
    "BILLFOLD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("BILLFOLD_REQUIRE_POSTGRES") == "1"
SECRET_KEY = b"test-secret-key-0123456789abcdef0123456789"
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
# The claim-code CSV, as the issue specifies it for the CLI and the API alike.
CSV_HEADER = [
    "code",
    "batch_id",
    "plan",
    "duration",
    "max_redemptions",
    "expires_at",
    "source",
    "campaign",
    "tier",
    "feature",
    "value",
    "metadata",
    "wallet_credit",
]


# Property tests draw the same examples on every run, so CI is reproducible; a failure
# prints the example to turn into a unit test. Nothing is written to .hypothesis/.
hypothesis.settings.register_profile("billfold", derandomize=True, deadline=None, database=None)
hypothesis.settings.load_profile("billfold")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def _admin_execute(url: str, statement: str) -> None:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run, migrated; dropped afterwards."""
    name = f"billfold_test_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin_execute(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except Exception as error:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required (BILLFOLD_REQUIRE_POSTGRES=1): {error}")
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}; ran the SQLite half only")
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    asyncio.run(_admin_execute(POSTGRES_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="billfold-test-") as folder:
        url = f"sqlite:///{folder}/billfold.db"
        upgrade(url)
        yield url


NATS_URL = os.environ.get("BILLFOLD_TEST_NATS_URL", "nats://127.0.0.1:4222")
REQUIRE_NATS = os.environ.get("BILLFOLD_REQUIRE_NATS") == "1"


@pytest.fixture(scope="session")
def nats_url() -> str:
    """NATS with JetStream, for the ingest stream's tests (skipped when unreachable)."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(NATS_URL)
    try:
        socket.create_connection((where.hostname or "127.0.0.1", where.port or 4222), 2).close()
    except OSError as error:
        if REQUIRE_NATS:
            pytest.fail(f"NATS is required (BILLFOLD_REQUIRE_NATS=1): {error}")
        pytest.skip(f"NATS not reachable at {NATS_URL}")
    return NATS_URL


T = TypeVar("T")


def postgresql_only(test: T) -> T:
    """Run a test on PostgreSQL only; say why in a comment where it is used."""
    test.backends = ("postgresql",)  # type: ignore[attr-defined]
    return test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        backends = getattr(metafunc.function, "backends", ("sqlite", "postgresql"))
        metafunc.parametrize("backend", backends)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(request.getfixturevalue("sqlite_url"))


@dataclass
class Harness:
    """One tenant with the tests' plans applied, an admin key, and a frozen clock."""

    client: httpx.AsyncClient
    database: Database
    clock: FrozenClock
    settings: Settings
    tenant_id: str
    admin: dict[str, str]
    app: FastAPI

    @property
    def backend(self) -> str:
        return self.database.backend

    async def key(self, scope: Scope | str) -> dict[str, str]:
        async with self.database.transaction() as session:
            _key, token = await tenants.create_key(
                session, self.operator(), name=f"test {scope}", scope=Scope(scope)
            )
        return {"Authorization": f"Bearer {token}"}

    def operator(self) -> Context:
        """The context of an operator acting now, as the factories act."""
        return Context(self.tenant_id, factories.OPERATOR, "test", self.clock.now())

    async def apply_plans(self, document: str) -> None:
        async with self.database.transaction() as session:
            await catalog_service.apply(session, self.operator(), plansfile.parse(document))

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", self.admin)
        return await self.client.post(path, json=body, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", self.admin)
        return await self.client.get(path, headers=headers, **kwargs)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "secret_key": SECRET_KEY}
    values.update(overrides)
    return Settings(**values)


async def new_harness(
    database_url: str, plans: Path | str = PLANS, **settings_overrides: Any
) -> Harness:
    """A new tenant with `plans` (the tests' plans file by default), on a new app."""
    settings = make_settings(database_url, **settings_overrides)
    database = Database(database_url, pool_size=5)
    clock = FrozenClock(START)
    app = create_app(settings, clock=clock, database=database)
    tenant_id, token = await factories.tenant(database, clock.now(), plans)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://billfold.test")
    return Harness(
        client=client,
        database=database,
        clock=clock,
        settings=settings,
        tenant_id=tenant_id,
        admin={"Authorization": f"Bearer {token}"},
        app=app,
    )


@pytest.fixture
async def harness(backend: str, database_url: str) -> AsyncIterator[Harness]:
    built = await new_harness(database_url)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 problem with every member, and this status and stable code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    for member in ("type", "title", "status", "detail", "code"):
        assert member in body, (member, body)
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"].endswith("/" + code)
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body
