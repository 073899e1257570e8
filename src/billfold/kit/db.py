"""Engine, column types and the unit of work.

Sessions commit in exactly one place: when a `Database.transaction()` block ends
without an error (one per request or per CLI command). Services and repositories
only flush. The one exception is `Database.autocommit()`, for work made of statements
that are each atomic on their own (consume's unlocked path, decision 0018).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import JSON, DateTime, MetaData, Numeric, Row, String, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.types import TypeDecorator, TypeEngine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# A result row of any shape, as repositories hand them to services.
Record: TypeAlias = Row[*tuple[Any, ...]]

JSONDocument = JSON().with_variant(JSONB(), "postgresql")

# Where a session keeps the event log's chain key (`Database.key_event_log`).
CHAIN_KEY = "billfold.event_log_key"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC instants on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Exact(TypeDecorator[Decimal]):
    """An exact `Decimal` on every backend: PostgreSQL's unconstrained NUMERIC, which
    keeps every digit; on SQLite, whose numbers are floats, the decimal's text. Never a
    float in between. Sums of money are taken over integer minor units, not these."""

    impl = Numeric(asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(100))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal) or not value.is_finite():
            raise ValueError(f"an exact column stores a finite Decimal, not {value!r}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


def async_url(url: str) -> str:
    """Map a plain database URL onto the async driver Billfold uses for it."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def sync_url(url: str) -> str:
    """The same database through a synchronous driver name, for messages and tools."""
    parsed = make_url(url)
    return parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=True)


class Database:
    """One engine per process, with separate read and write session factories.

    On SQLite a write transaction starts with `BEGIN IMMEDIATE`, so two writers queue
    on the database lock instead of failing when a read lock is upgraded.
    """

    def __init__(self, url: str, *, pool_size: int = 20, echo: bool = False) -> None:
        self.url = url
        self.backend = make_url(url).get_backend_name()
        options: dict[str, Any] = {"echo": echo}
        if self.backend == "sqlite":
            database = make_url(url).database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            options["connect_args"] = {"timeout": 30}
        else:
            options["pool_size"] = pool_size
            options["max_overflow"] = pool_size
            options["pool_pre_ping"] = False
        self.engine: AsyncEngine = create_async_engine(async_url(url), **options)
        if self.backend == "sqlite":
            _configure_sqlite(self.engine)
        self._write = async_sessionmaker(
            self.engine.execution_options(billfold_write=True), expire_on_commit=False
        )
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit = async_sessionmaker(
            self.engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False
        )

    def key_event_log(self, key: bytes) -> None:
        """Give every session of this database the event log's chain key
        (`kit.eventlog.chain_key`): it is kept outside the database, so it comes from the
        settings of whoever opens it (the app, the CLI)."""
        for factory in (self._write, self._read, self._autocommit):
            factory.configure(info={CHAIN_KEY: key})

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgresql"

    def unit(self, *, write: bool) -> UnitOfWork:
        """A request's unit of work; it opens a session only if the request needs one."""
        return UnitOfWork(self._write if write else self._read)

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncIterator[AsyncSession]:
        """A session whose work commits when the block ends, or rolls back on error."""
        factory = self._write if write else self._read
        async with factory() as session, session.begin():
            yield session

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncSession]:
        """A session in which each statement commits on its own, with no BEGIN or COMMIT
        round trip: for work made of single statements that are each atomic."""
        async with self._autocommit() as session:
            yield session

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


class UnitOfWork:
    """One request's transaction, begun lazily: a request answered from memory (a warm
    entitlement check) never checks out a connection. The owner commits or rolls back
    exactly once, at the end."""

    def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
        self._factory = factory
        self._session: AsyncSession | None = None
        self._began = False

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self._factory()
        return self._session

    @property
    def opened(self) -> bool:
        return self._session is not None

    async def commit(self) -> None:
        if self._session is not None and self._session.in_transaction():
            self._began = True
            await self._session.commit()

    async def rollback(self) -> None:
        if self._session is not None and self._session.in_transaction():
            self._began = True
            await self._session.rollback()

    async def release(self) -> None:
        """End what the unit has read so far and give its connection back: for a read
        unit whose request now waits on work done elsewhere (consume's group commit)."""
        await self.rollback()
        await self.close()
        self._session, self._began = None, False

    async def close(self) -> None:
        # A session that never began a transaction holds no connection: nothing to close.
        if self._session is not None and (self._began or self._session.in_transaction()):
            await self._session.close()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get("billfold_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
