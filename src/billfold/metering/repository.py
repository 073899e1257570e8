"""All SQL for usage events."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.invariants import invariant
from billfold.kit.sql import dialect_insert
from billfold.metering.tables import quota_accounts, usage_events

CHUNK = 1_000  # rows per INSERT statement; each row binds 12 parameters


async def insert_new(
    session: AsyncSession, rows: Sequence[dict[str, Any]], properties_json: Sequence[str] = ()
) -> set[str]:
    """Insert the events whose key the tenant has not used yet; returns the keys inserted.

    The unique (tenant, key) constraint decides, so concurrent retries of one key insert
    it exactly once, whichever transaction commits first. Rows share one tenant;
    `properties_json`, when given, is each row's properties as JSON text."""
    if is_postgres(session):
        return await _insert_new_postgres(session, rows, properties_json)
    # One statement, compiled once and cached; SQLAlchemy sends the rows in batches
    # ("insertmanyvalues") and gathers what RETURNING answers.
    statement = (
        dialect_insert(session, usage_events)
        .on_conflict_do_nothing(index_elements=["tenant_id", "idempotency_key"])
        .returning(usage_events.c.idempotency_key)
    )
    return set((await session.execute(statement, list(rows))).scalars())


# A batch as one array per column: asyncpg encodes each in binary, and the server unnests
# them in one statement. Per row this costs a fraction of a multi-row VALUES list, which
# SQLAlchemy builds and binds parameter by parameter (docs/decisions/0016).
_EVENT_COLUMNS = """
INSERT INTO usage_events (id, tenant_id, idempotency_key, customer, type, service,
                          correlation_id, occurred_at, received_at, properties, body_digest,
                          outcome)"""


def _events_from_arrays(*, with_feature: bool = False) -> str:
    """The SELECT that unnests `_event_arrays`: the tenant is $1, the batch's instant $2,
    the arrays $3 to $13. `with_feature` adds $14, each event's feature, as `e.feature`
    (not stored: the unlocked write matches events to their accounts by it)."""
    extra_array, extra_name = (", $14::text[]", ", feature") if with_feature else ("", "")
    return f"""
SELECT e.id, $1, e.key, e.customer, e.type, e.service, e.correlation,
       coalesce(e.occurred_at, e.received_at, $2), coalesce(e.received_at, $2),
       e.properties::jsonb, e.digest, e.outcome::jsonb
FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[],
            $13::text[]{extra_array})
     AS e(id, key, customer, type, service, correlation, occurred_at, received_at,
          properties, digest, outcome{extra_name})
"""  # noqa: S608 (constants only; no input is formatted in)


_UNNEST_INSERT = (
    _EVENT_COLUMNS + _events_from_arrays() + "ON CONFLICT (tenant_id, idempotency_key) DO NOTHING\n"
)


def _event_arrays(
    rows: Sequence[dict[str, Any]], properties_json: Sequence[str]
) -> tuple[Any, ...]:
    """`_UNNEST_INSERT`'s thirteen parameters for `rows`, all of one tenant. A consume's
    `outcome` (decision 0047) is sent as JSON text; reported events have none."""
    first = rows[0]
    invariant(all(row["tenant_id"] == first["tenant_id"] for row in rows), "one tenant")
    base = first["received_at"]
    texts = properties_json or [json.dumps(row["properties"]) for row in rows]
    # unnest pads a NULL array with NULLs, and the instants default (occurred_at to
    # received_at, received_at to the first row's): a column that is NULL or the default
    # in every row is sent as one NULL, not as 10,000 encoded elements.
    received = [None if row["received_at"] == base else row["received_at"] for row in rows]
    occurred = [
        None if row["occurred_at"] == row["received_at"] else row["occurred_at"] for row in rows
    ]
    return (
        first["tenant_id"],
        base,
        [row["id"] for row in rows],
        [row["idempotency_key"] for row in rows],
        [row["customer"] for row in rows],
        [row["type"] for row in rows],
        _unless_all_null([row["service"] for row in rows]),
        _unless_all_null([row["correlation_id"] for row in rows]),
        _unless_all_null(occurred),
        _unless_all_null(received),
        list(texts),
        _unless_all_null([row.get("body_digest") for row in rows]),
        _unless_all_null([_json_or_none(row.get("outcome")) for row in rows]),
    )


def _json_or_none(document: Any) -> str | None:
    return None if document is None else json.dumps(document)


async def _insert_new_postgres(
    session: AsyncSession, rows: Sequence[dict[str, Any]], properties_json: Sequence[str]
) -> set[str]:
    connection = await session.connection()
    result = await connection.exec_driver_sql(_UNNEST_INSERT, _event_arrays(rows, properties_json))
    if result.rowcount == len(rows):
        return {row["idempotency_key"] for row in rows}  # the usual case: every key was new
    # Some keys were stored already. Ours are those stored under the id this call sent.
    # (Cheaper than RETURNING 10,000 keys for the rare batch that repeats one.)
    sent = {row["idempotency_key"]: row["id"] for row in rows}
    stored = await ids_by_key(session, rows[0]["tenant_id"], list(sent))
    return {key for key, event_id in stored.items() if sent.get(key) == event_id}


# Consume's write: the batch's events and its accounts' new state in one statement, one
# round trip (a consume batch waits on every one). The counts tell whether every key was
# new: if not, the caller rolls back. On PostgreSQL a trigger adds 1 to an account's
# `version` on every update (migration 0006), so no statement here sets it.
def _update_accounts(now: int, first_array: int) -> str:
    """The UPDATE that writes accounts' states: the tenant is $1, the instant and the three
    arrays (customers, features, states as JSON) are numbered from the arguments."""
    c, f, s = first_array, first_array + 1, first_array + 2
    return f"""
UPDATE quota_accounts AS a
SET state = u.state::jsonb, updated_at = ${now}
FROM unnest(${c}::text[], ${f}::text[], ${s}::text[]) AS u(customer, feature, state)
WHERE a.tenant_id = $1 AND a.customer = u.customer AND a.feature_key = u.feature
"""  # noqa: S608 (parameter numbers only; no input is formatted in)


def _account_arrays(states: Mapping[tuple[str, str], dict[str, Any]]) -> tuple[list[str], ...]:
    ordered = sorted(states.items())
    return (
        [customer for (customer, _feature), _state in ordered],
        [feature for (_customer, feature), _state in ordered],
        [json.dumps(state) for _key, state in ordered],
    )


_SAVE_ACCOUNTS = _update_accounts(now=2, first_array=3)
_RECORD_CONSUMES = f"""
WITH events AS ({_UNNEST_INSERT.strip()} RETURNING 1),
accounts AS ({_update_accounts(now=17, first_array=14).strip()} RETURNING 1)
SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM accounts)
"""  # noqa: S608 (constants only; no input is formatted in)


async def record_consumes(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    states: Mapping[tuple[str, str], dict[str, Any]],
    now: datetime,
) -> int:
    """Store consumes' usage events and their accounts' states (locked by the caller);
    returns how many events were new. One statement on PostgreSQL."""
    tenant_id = rows[0]["tenant_id"]
    if not is_postgres(session):
        inserted = await insert_new(session, rows)
        await save_accounts(session, tenant_id, states, now)
        return len(inserted)
    connection = await session.connection()
    result: Any = await connection.exec_driver_sql(
        _RECORD_CONSUMES, (*_event_arrays(rows, ()), *_account_arrays(states), now)
    )
    events, _accounts = result.one()
    return int(events)


# Consume's unlocked write (docs/decisions/0018): each account is written only if its
# version is still the one read (a missing account is version 0, and is created), and a
# consume's event is stored only if its account was. An account that moved meanwhile is
# left as it is, with its events, and the caller draws those consumes again. A key that is
# stored already fails the whole statement: there is no ON CONFLICT on the events.
_EVENTS_WITH_FEATURE = _events_from_arrays(with_feature=True)
_RECORD_UNLESS_CHANGED = f"""
WITH accounts AS (
INSERT INTO quota_accounts AS a (tenant_id, customer, feature_key, state, updated_at, version)
SELECT $1, u.customer, u.feature, u.state::jsonb, $18, u.version + 1
FROM unnest($15::text[], $16::text[], $17::text[], $19::bigint[])
     AS u(customer, feature, state, version)
ON CONFLICT (tenant_id, customer, feature_key) DO UPDATE
SET state = excluded.state, updated_at = excluded.updated_at
WHERE a.version = excluded.version - 1
RETURNING a.customer, a.feature_key
),
events AS ({_EVENT_COLUMNS.strip()}{_EVENTS_WITH_FEATURE.rstrip()}
WHERE (e.customer, e.feature) IN (SELECT * FROM accounts)
RETURNING 1)
SELECT customer, feature_key FROM accounts
"""  # noqa: S608 (constants only; no input is formatted in)


async def record_unless_changed(
    session: AsyncSession,
    rows: Sequence[dict[str, Any]],
    features: Sequence[str],
    states: Mapping[tuple[str, str], dict[str, Any]],
    versions: Mapping[tuple[str, str], int],
    now: datetime,
) -> set[tuple[str, str]]:
    """Store consumes' events (`features[i]` is row i's feature) and their accounts' new
    states, for the accounts whose version is still `versions[key]`; returns those
    accounts. PostgreSQL only; one statement, which commits on its own in autocommit.

    Raises the driver's unique violation (23505) if a key is stored already."""
    connection = await session.connection()
    customers, account_features, texts = _account_arrays(states)
    read = [versions[key] for key in zip(customers, account_features, strict=True)]
    arguments = (
        *_event_arrays(rows, ()),
        list(features),
        customers,
        account_features,
        texts,
        now,
        read,
    )
    result: Any = await connection.exec_driver_sql(_RECORD_UNLESS_CHANGED, arguments)
    return {(row[0], row[1]) for row in result}


# Accounts of (customer, feature) pairs. As it is, it locks nothing: what the unlocked
# path draws from. `_LOCK_ACCOUNTS` adds the lock.
_READ_ACCOUNTS = """
SELECT a.customer, a.feature_key, a.state::text, a.version
FROM unnest($2::text[], $3::text[]) AS k(customer, feature)
JOIN quota_accounts AS a
  ON a.tenant_id = $1 AND a.customer = k.customer AND a.feature_key = k.feature
"""


async def read_accounts(
    session: AsyncSession, tenant_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[dict[str, Any], int]]:
    """The (state, version) of the existing accounts among (customer, feature) pairs,
    without locking them. PostgreSQL only."""
    ordered = sorted(set(keys))
    connection = await session.connection()
    result: Any = await connection.exec_driver_sql(
        _READ_ACCOUNTS,
        (tenant_id, [key[0] for key in ordered], [key[1] for key in ordered]),
    )
    return {(row[0], row[1]): (json.loads(row[2]), int(row[3])) for row in result}


def _unless_all_null(column: list[Any]) -> list[Any] | None:
    return None if all(value is None for value in column) else column


_IDS_BY_KEYS = """
SELECT e.idempotency_key, e.id
FROM unnest($2::text[]) AS k(key)
JOIN usage_events AS e ON e.tenant_id = $1 AND e.idempotency_key = k.key
"""


async def ids_by_key(session: AsyncSession, tenant_id: str, keys: Sequence[str]) -> dict[str, str]:
    """The ids of the stored events among `keys`, by key (PostgreSQL's ingest path: it
    reads no properties, unlike `events_by_keys`)."""
    if not is_postgres(session):
        return {row[0]: row[1] for row in await events_by_keys(session, tenant_id, keys)}
    connection = await session.connection()
    result: Any = await connection.exec_driver_sql(_IDS_BY_KEYS, (tenant_id, sorted(set(keys))))
    return {row[0]: row[1] for row in result}


# (idempotency key, id, customer, type, body digest, properties, outcome)
StoredKey = tuple[str, str, str, str, str | None, dict[str, Any], dict[str, Any] | None]


async def events_in_full(
    session: AsyncSession, tenant_id: str, keys: Sequence[str]
) -> list[Record]:
    """The stored events of some keys as they were stored: their key, id, customer, type,
    service, instants and properties. For keys sent again, which are rare."""
    statement = select(
        usage_events.c.idempotency_key,
        usage_events.c.id,
        usage_events.c.customer,
        usage_events.c.type,
        usage_events.c.service,
        usage_events.c.occurred_at,
        usage_events.c.received_at,
        usage_events.c.properties,
    ).where(usage_events.c.tenant_id == tenant_id)
    found: list[Record] = []
    unique = sorted(set(keys))
    for start in range(0, len(unique), CHUNK):
        chunk = statement.where(usage_events.c.idempotency_key.in_(unique[start : start + CHUNK]))
        found.extend((await session.execute(chunk)).all())
    return found


def property_text(session: AsyncSession, name: str) -> ColumnElement[str]:
    """One property of the stored JSON, as exact JSON text (`"gpt-4o"`, `0.125`), or NULL."""
    if is_postgres(session):
        return cast(type_coerce(usage_events.c.properties, JSONB).op("->")(literal(name)), Text)
    return type_coerce(usage_events.c.properties, Text).op("->")(literal(f'$."{name}"'))


async def count_events(
    session: AsyncSession,
    tenant_id: str,
    customer: str,
    event_types: Sequence[str],
    start: datetime,
    end: datetime,
) -> int:
    """How many events of these types a customer has in [start, end)."""
    statement = select(func.count()).where(
        usage_events.c.tenant_id == tenant_id,
        usage_events.c.customer == customer,
        usage_events.c.type.in_(event_types),
        usage_events.c.occurred_at >= start,
        usage_events.c.occurred_at < end,
    )
    return int((await session.execute(statement)).scalar_one())


async def events_of(
    session: AsyncSession,
    tenant_id: str,
    customer: str,
    event_types: Sequence[str],
    start: datetime,
    end: datetime,
    properties: Sequence[str],
) -> list[Record]:
    """A customer's events of some types in [start, end): the instant, the type, and the
    named properties as JSON text, labelled p0, p1, ... in the order given."""
    columns = [property_text(session, name).label(f"p{i}") for i, name in enumerate(properties)]
    statement = select(usage_events.c.occurred_at, usage_events.c.type, *columns).where(
        usage_events.c.tenant_id == tenant_id,
        usage_events.c.customer == customer,
        usage_events.c.type.in_(event_types),
        usage_events.c.occurred_at >= start,
        usage_events.c.occurred_at < end,
    )
    return list((await session.execute(statement)).all())


# Totals of many (customer, start, end) spans at once (`usage.totals`).


async def lock_accounts(
    session: AsyncSession, tenant_id: str, keys: Sequence[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    """Lock the quota accounts of (customer, feature) pairs, creating missing ones, and
    return their state. Locks are taken in key order, so two batches never deadlock."""
    ordered = sorted(set(keys))
    if is_postgres(session):
        return await _lock_accounts_postgres(session, tenant_id, ordered, now)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        await session.execute(
            dialect_insert(session, quota_accounts).on_conflict_do_nothing(
                index_elements=["tenant_id", "customer", "feature_key"]
            ),
            [
                {
                    "tenant_id": tenant_id,
                    "customer": customer,
                    "feature_key": feature,
                    "state": {},
                    "updated_at": now,
                }
                for customer, feature in chunk
            ],
        )
        statement = (
            select(quota_accounts.c.customer, quota_accounts.c.feature_key, quota_accounts.c.state)
            .where(
                quota_accounts.c.tenant_id == tenant_id,
                tuple_(quota_accounts.c.customer, quota_accounts.c.feature_key).in_(chunk),
            )
            .order_by(quota_accounts.c.customer, quota_accounts.c.feature_key)
            .with_for_update()
        )
        for row in await session.execute(statement):
            found[(row.customer, row.feature_key)] = dict(row.state)
    return found


# Create the missing accounts, then lock them all in key order: byte order (COLLATE "C"),
# which is Python's order for the sorted arrays that the unlocked write goes through, so
# both paths lock rows in one order whatever the database's collation. (A single upsert whose
# no-op update takes the lock was measured too: it writes a new version of every account
# row, and on a 1,000-customer usage batch that cost the database more than the round
# trip it saved.)
_CREATE_ACCOUNTS = """
INSERT INTO quota_accounts (tenant_id, customer, feature_key, state, updated_at)
SELECT $1, k.customer, k.feature, '{}'::jsonb, $2
FROM unnest($3::text[], $4::text[]) AS k(customer, feature)
ON CONFLICT DO NOTHING
"""
_LOCK_ACCOUNTS = (
    _READ_ACCOUNTS
    + """ORDER BY a.customer COLLATE "C", a.feature_key COLLATE "C"
FOR UPDATE OF a
"""
)


async def _lock_accounts_postgres(
    session: AsyncSession, tenant_id: str, ordered: list[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], dict[str, Any]]:
    customers = [customer for customer, _feature in ordered]
    features = [feature for _customer, feature in ordered]
    connection = await session.connection()
    await connection.exec_driver_sql(_CREATE_ACCOUNTS, (tenant_id, now, customers, features))
    result: Any = await connection.exec_driver_sql(_LOCK_ACCOUNTS, (tenant_id, customers, features))
    return {(row[0], row[1]): json.loads(row[2]) for row in result}


async def read_account(
    session: AsyncSession, tenant_id: str, customer: str, feature: str
) -> dict[str, Any]:
    statement = select(quota_accounts.c.state).where(
        quota_accounts.c.tenant_id == tenant_id,
        quota_accounts.c.customer == customer,
        quota_accounts.c.feature_key == feature,
    )
    state = (await session.execute(statement)).scalar_one_or_none()
    return dict(state) if state else {}


async def save_accounts(
    session: AsyncSession,
    tenant_id: str,
    states: Mapping[tuple[str, str], dict[str, Any]],
    now: datetime,
) -> None:
    if not states:
        return
    if is_postgres(session):
        connection = await session.connection()
        arguments = (tenant_id, now, *_account_arrays(states))
        await connection.exec_driver_sql(_SAVE_ACCOUNTS, arguments)
        return
    statement = (
        update(quota_accounts)
        .where(
            quota_accounts.c.tenant_id == bindparam("b_tenant"),
            quota_accounts.c.customer == bindparam("b_customer"),
            quota_accounts.c.feature_key == bindparam("b_feature"),
        )
        .values(
            state=bindparam("b_state"),
            updated_at=bindparam("b_now"),
            version=quota_accounts.c.version + 1,  # PostgreSQL's trigger does this there
        )
    )
    rows = [
        {
            "b_tenant": tenant_id,
            "b_customer": customer,
            "b_feature": feature,
            "b_state": state,
            "b_now": now,
        }
        for (customer, feature), state in sorted(states.items())
    ]
    # One statement for every account: the driver sends the rows as one batch.
    await session.execute(statement, rows)


# Keys as one array joined to the unique index: one prepared statement whatever the
# count, and a plan of index lookups even before the table was first analysed (an IN list
# on a fresh, fast-growing table was planned as a scan of all of a tenant's events).
_EVENTS_BY_KEYS = """
SELECT e.idempotency_key, e.id, e.customer, e.type, e.body_digest, e.properties::text,
       e.outcome::text
FROM unnest($2::text[]) AS k(key)
JOIN usage_events AS e ON e.tenant_id = $1 AND e.idempotency_key = k.key
"""


async def events_by_keys(
    session: AsyncSession, tenant_id: str, keys: Sequence[str]
) -> list[StoredKey]:
    """The stored events among `keys`: (idempotency key, id, customer, type, body digest,
    properties, outcome). The digest is a consume's (None for a reported event, and for an
    event stored before migration 0009); so is the outcome (None also for a consume
    without overage, and for one stored before migration 0021)."""
    unique = sorted(set(keys))
    if not unique:
        return []
    if is_postgres(session):
        connection = await session.connection()
        result: Any = await connection.exec_driver_sql(_EVENTS_BY_KEYS, (tenant_id, unique))
        return [
            (row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), _loads(row[6]))
            for row in result
        ]
    found: list[StoredKey] = []
    for start in range(0, len(unique), CHUNK):
        statement = select(
            usage_events.c.idempotency_key,
            usage_events.c.id,
            usage_events.c.customer,
            usage_events.c.type,
            usage_events.c.body_digest,
            usage_events.c.properties,
            usage_events.c.outcome,
        ).where(
            usage_events.c.tenant_id == tenant_id,
            usage_events.c.idempotency_key.in_(unique[start : start + CHUNK]),
        )
        found.extend(
            (row[0], row[1], row[2], row[3], row[4], dict(row[5]), _dict_or_none(row[6]))
            for row in await session.execute(statement)
        )
    return found


def _loads(text: str | None) -> dict[str, Any] | None:
    return None if text is None else _dict_or_none(json.loads(text))


def _dict_or_none(document: Any) -> dict[str, Any] | None:
    return dict(document) if isinstance(document, dict) else None


def is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


# Reading stored events (GET /v1/events). Kept apart from the write paths above.


async def page_of_events(
    session: AsyncSession,
    tenant_id: str,
    *,
    customer: str | None,
    types: Sequence[str],
    start: datetime | None,
    end: datetime | None,
    correlation_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """Up to `limit` of the tenant's events, in (occurred_at, id) order, after the
    position `after`, filtered as given. With a customer, the (tenant, customer, type,
    occurred_at) index narrows the scan to that customer's events."""
    columns = usage_events.c
    statement = select(
        columns.id,
        columns.idempotency_key,
        columns.customer,
        columns.type,
        columns.service,
        columns.correlation_id,
        columns.occurred_at,
        columns.received_at,
        columns.properties,
    ).where(columns.tenant_id == tenant_id)
    if customer is not None:
        statement = statement.where(columns.customer == customer)
    if types:
        statement = statement.where(columns.type.in_(list(types)))
    if start is not None:
        statement = statement.where(columns.occurred_at >= start)
    if end is not None:
        statement = statement.where(columns.occurred_at < end)
    if correlation_id is not None:
        statement = statement.where(columns.correlation_id == correlation_id)
    if after is not None:
        at, event_id = after
        # Past (at, id): the first condition alone bounds the index scan; an OR of the two
        # positions would be planned as a second scan, of every later id, in every tenant.
        statement = statement.where(
            columns.occurred_at >= at, or_(columns.occurred_at > at, columns.id > event_id)
        )
    statement = statement.order_by(columns.occurred_at, columns.id).limit(limit)
    return list((await session.execute(statement)).all())
