"""Usage past one machine: the API appends accepted events to a NATS JetStream stream,
and `billfold worker ingest` drains it into the store in batches.

A message is one request's checked events. The API answers once JetStream has stored it
(the publish ack). A worker writes a batch of messages in one transaction, then acks
them. A worker killed before its ack leaves the messages to be delivered again, and the
unique (tenant, idempotency key) constraint makes the second write a no-op. So every
event is stored, and drawn from quotas, exactly once. Several workers share one durable
consumer, and each message goes to one of them at a time.

What cannot be stored is not retried forever (decision 0024): an event that the checks or
the database refuse (a NUL byte, a lone surrogate, a malformed field) is parked in the
dead letters with its error, its neighbours are stored, the message is acked, and the
worker goes on; so is a message that does not decode. A failure that is the database's
own (it went away, a deadlock) gives the batch back to JetStream, as before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from billfold.catalog import catalog as catalog_reader
from billfold.kit.clock import Clock
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.kit.text import json_faults
from billfold.kit.worker import Runner
from billfold.metering import deadletters
from billfold.metering.deadletters import Letter
from billfold.metering.events import UsageEvent
from billfold.metering.ingest import KEY_REUSED as REUSED
from billfold.metering.ingest import ingest

log = logging.getLogger("billfold.ingest")

SUBJECT = "billfold.usage"
CONSUMER = "billfold-ingest"
DEDUP_WINDOW_S = 120.0
# A batch not acked within this is delivered again (its worker died). Were the worker only
# slow, the second write would find every key stored and do nothing.
ACK_WAIT_S = 15.0


def _subject(stream: str) -> str:
    return f"{SUBJECT}.{stream.lower()}"


async def _ensure_stream(js: JetStreamContext, stream: str) -> None:
    config = StreamConfig(
        name=stream,
        subjects=[_subject(stream) + ".>"],
        storage=StorageType.FILE,
        duplicate_window=DEDUP_WINDOW_S,
    )
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)


class UsagePublisher:
    """The API's side: one connection per process, opened on first use."""

    def __init__(self, url: str, stream: str) -> None:
        self.url, self.stream = url, stream
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()

    async def _context(self) -> JetStreamContext:
        async with self._lock:
            if self._js is None:
                self._client = await nats.connect(self.url, max_reconnect_attempts=-1)
                self._js = self._client.jetstream()
                await _ensure_stream(self._js, self.stream)
            return self._js

    async def publish(self, ctx: Context, events: Sequence[UsageEvent]) -> None:
        """Append the events as one message; returns once JetStream has stored it.

        The message id is a digest of the tenant and the events, so a client retrying the
        same request within two minutes is stored once by JetStream itself."""
        body = {
            "tenant_id": ctx.tenant_id,
            "received_at": ctx.now.isoformat(),
            "correlation_id": ctx.correlation_id,
            "events": [_event_json(event) for event in events],
        }
        payload = json.dumps(body, separators=(",", ":"), default=str).encode()
        same_request = json.dumps(body["events"], separators=(",", ":"), default=str)
        digest = hashlib.sha256(same_request.encode()).hexdigest()
        js = await self._context()
        await js.publish(
            f"{_subject(self.stream)}.{ctx.tenant_id}",
            payload,
            headers={"Nats-Msg-Id": f"{ctx.tenant_id}:{digest}"},
            timeout=10,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()  # every publish was acked: nothing is in flight
            self._client, self._js = None, None


def _event_json(event: UsageEvent) -> dict[str, Any]:
    return {
        "idempotency_key": event.idempotency_key,
        "customer": event.customer,
        "type": event.type,
        "service": event.service,
        "correlation_id": event.correlation_id,
        "timestamp": event.timestamp.isoformat() if event.timestamp else None,
        "properties": event.properties,
    }


def _event_of(raw: dict[str, Any]) -> UsageEvent:
    timestamp = raw.get("timestamp")
    return UsageEvent(
        idempotency_key=raw["idempotency_key"],
        customer=raw["customer"],
        type=raw["type"],
        service=raw.get("service"),
        correlation_id=raw.get("correlation_id"),
        timestamp=datetime.fromisoformat(timestamp) if timestamp else None,
        properties=raw.get("properties") or {},
    )


@dataclass(frozen=True)
class WorkerOptions:
    url: str
    stream: str
    batch: int = 100  # messages per transaction
    late_window: timedelta = timedelta(days=7)


class DeadLetterMetrics:
    """What the worker's `/metrics` (`--metrics-port`) says about its dead letters."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.parked = Counter(
            "billfold_ingest_dead_letters",
            "Events (kind=event) and undecodable messages (kind=message) the ingest worker "
            "parked in the dead letters instead of storing",
            ["kind"],
            registry=registry,
        )
        self.waiting = Gauge(
            "billfold_ingest_dead_letters_waiting",
            "Rows in the dead letters, waiting for an operator (as this worker last saw)",
            registry=registry,
        )
        for kind in (deadletters.EVENT, deadletters.MESSAGE):
            self.parked.labels(kind)
        self.dropped = Counter(
            "billfold_ingest_dropped_events",
            "Events the ingest worker dropped and logged, by code: a key reused with another "
            "body (idempotency_key_reused) is the client's retry bug, answered by the API",
            ["code"],
            registry=registry,
        )
        self.dropped.labels(REUSED)


async def run_worker(
    database: Database,
    options: WorkerOptions,
    stop: asyncio.Event,
    *,
    clock: Clock,
    metrics: DeadLetterMetrics,
) -> int:
    """Drain the stream on the shared worker runner until `stop` is set; returns how many
    messages were handled (stored, or parked)."""
    client = await nats.connect(options.url, max_reconnect_attempts=-1)
    try:
        js = client.jetstream()
        await _ensure_stream(js, options.stream)
        subscription = await js.pull_subscribe(
            _subject(options.stream) + ".>",
            durable=CONSUMER,
            stream=options.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_S),
        )
        async with database.transaction(write=False) as session:
            metrics.waiting.set(await deadletters.waiting(session))
        source = StreamSource(database, subscription, options, clock, metrics)
        progress = await Runner("ingest", source, batch=options.batch).run(stop)
        return progress.items
    finally:
        # Everything fetched was acked or will be redelivered; nothing needs draining.
        await client.close()


class StreamSource:
    """The stream as a `kit.worker.Source`: a batch of messages is stored in one
    transaction per tenant, what cannot be stored is parked, then the batch is
    acknowledged; a batch the database failed (not its content) is handed back."""

    def __init__(
        self,
        database: Database,
        subscription: JetStreamContext.PullSubscription,
        options: WorkerOptions,
        clock: Clock,
        metrics: DeadLetterMetrics,
    ) -> None:
        self._database = database
        self._subscription = subscription
        self._options = options
        self._clock = clock
        self._metrics = metrics

    async def take(self, limit: int) -> list[Msg]:
        return await next_batch(self._subscription, limit)

    async def handle(self, batch: Sequence[Msg], stop: asyncio.Event) -> None:
        now = self._clock.now()
        bodies: list[tuple[str | None, dict[str, Any]]] = []
        undecodable: list[Letter] = []
        for message in batch:
            body, fault = decode(message.data)
            if body is None:
                letter = deadletters.message_letter(
                    message.data, message_id=_message_id(message), error=fault or "undecodable"
                )
                undecodable.append(letter)
            else:
                bodies.append((_message_id(message), body))
        dropped: list[str] = []
        parked = await store(self._database, bodies, self._options, now, dropped=dropped)
        for code in dropped:
            self._metrics.dropped.labels(code).inc()
        if undecodable:
            async with self._database.transaction() as session:
                for letter in undecodable:
                    await deadletters.park(session, letter, now)
            parked += undecodable
        if parked:
            await self._counted(parked)
        for message in batch:  # only after the commit: a crash means redelivery
            await message.ack()

    async def failed(self, batch: Sequence[Msg], error: Exception, retry_in_s: float) -> None:
        for message in batch:
            await message.nak(delay=retry_in_s)

    async def _counted(self, parked: list[Letter]) -> None:
        """Count and log what was parked (it is committed by now)."""
        for letter in parked:
            self._metrics.parked.labels(letter.kind).inc()
            if letter.kind == deadletters.MESSAGE:
                log.warning(
                    "ingest: parked an undecodable message %s: %s", letter.message_id, letter.error
                )
            else:
                log.warning(
                    "ingest: parked event %s of tenant %s (message %s): %s",
                    letter.idempotency_key,
                    letter.tenant_id,
                    letter.message_id,
                    letter.error,
                )
        try:
            async with self._database.transaction(write=False) as session:
                self._metrics.waiting.set(await deadletters.waiting(session))
        except Exception:  # only the gauge is late; the batch is stored and must be acked
            log.exception("ingest: could not count the dead letters")


async def next_batch(subscription: JetStreamContext.PullSubscription, size: int) -> list[Msg]:
    """Up to `size` messages, or none after a second of quiet."""
    try:
        return await subscription.fetch(size, timeout=1)
    except TimeoutError:
        # nats-py raises its own TimeoutError (a subclass of this one) or, when the deadline
        # lapses between its two pull requests, the builtin one. Both mean "nothing yet".
        return []


def _message_id(message: Msg) -> str | None:
    """The publisher's Nats-Msg-Id, or else the message's place in the stream."""
    if message.headers and message.headers.get("Nats-Msg-Id"):
        return message.headers["Nats-Msg-Id"]
    try:
        return f"stream sequence {message.metadata.sequence.stream}"
    except Exception:  # not a JetStream message: nothing names it
        return None


def decode(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A message's body, or None and why it is not one."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError) as error:
        return None, f"undecodable message: {error}"
    if not isinstance(body, dict):
        return None, "undecodable message: not a JSON object"
    tenant_id, received_at, events = (body.get(k) for k in ("tenant_id", "received_at", "events"))
    if not isinstance(tenant_id, str) or not 0 < len(tenant_id) <= TENANT_ID_LENGTH:
        return None, "undecodable message: no tenant_id"
    if any(json_faults(tenant_id)):
        return None, "undecodable message: the tenant_id is not text"
    if not isinstance(events, list):
        return None, "undecodable message: no list of events"
    try:
        moment = datetime.fromisoformat(received_at) if isinstance(received_at, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return None, "undecodable message: no received_at instant"
    correlation_id = body.get("correlation_id")
    if correlation_id is not None and not isinstance(correlation_id, str):
        return None, "undecodable message: correlation_id is not a string"
    return body, None


def _checked(raw: Any) -> tuple[UsageEvent | None, str | None]:
    """An event of a message, or None and why it cannot be stored: what the API checks
    was checked before it was queued, but a message may come from elsewhere."""
    if not isinstance(raw, dict):
        return None, "an event is a JSON object"
    for path, reason in json_faults(raw):
        return None, f"/{'/'.join(str(part) for part in path)} {reason}"
    try:
        return _event_of(raw), None
    except (KeyError, TypeError, ValueError) as error:
        return None, f"malformed event: {type(error).__name__}: {error}"


Items = list[tuple[str | None, dict[str, Any]]]
TENANT_ID_LENGTH = 40  # tenants.id


async def store(
    database: Database,
    bodies: Items,
    options: WorkerOptions,
    now: datetime,
    *,
    dropped: list[str] | None = None,
) -> list[Letter]:
    """One transaction per tenant in the batch: insert new events, draw quotas, and park
    what cannot be stored. If the database refuses a tenant's transaction for its
    content, its events are stored one by one, and each one refused is parked. Returns
    the letters parked; the code of each event dropped (logged, not parked: a key reused
    with another body) is added to `dropped`."""
    by_tenant: dict[str, Items] = {}
    for message_id, body in bodies:
        by_tenant.setdefault(body["tenant_id"], []).append((message_id, body))
    parked: list[Letter] = []
    for tenant_id, items in by_tenant.items():
        stored, refused = await _attempt(database, tenant_id, items, options, now, dropped)
        parked += stored
        if refused is not None:
            log.warning(
                "ingest: tenant %s's batch was refused (%s); storing its events one by one",
                tenant_id,
                _describe(refused),
            )
            parked += await _one_by_one(database, tenant_id, items, options, now, dropped)
    return parked


async def _attempt(
    database: Database,
    tenant_id: str,
    items: Items,
    options: WorkerOptions,
    now: datetime,
    dropped: list[str] | None,
) -> tuple[list[Letter], Exception | None]:
    """Store `items` in one transaction: (the letters parked, None), or ([], the error)
    when the database refused their content. The codes of the events dropped are added
    to `dropped` once the transaction commits."""
    found: list[str] = []
    try:
        async with database.transaction() as session:
            parked = await _store_tenant(session, tenant_id, items, options, now, found)
    except Exception as error:
        if not await _poisoned(database, error):
            raise
        return [], error
    if dropped is not None:
        dropped += found
    return parked, None


async def _one_by_one(
    database: Database,
    tenant_id: str,
    items: Items,
    options: WorkerOptions,
    now: datetime,
    dropped: list[str] | None,
) -> list[Letter]:
    parked: list[Letter] = []
    for message_id, body in items:
        for raw in body["events"]:
            single = [(message_id, {**body, "events": [raw]})]
            stored, refused = await _attempt(database, tenant_id, single, options, now, dropped)
            parked += stored
            if refused is not None:
                letter = _letter(tenant_id, message_id, body, raw, _describe(refused))
                async with database.transaction() as session:
                    await deadletters.park(session, letter, now)
                parked.append(letter)
    return parked


async def _store_tenant(
    session: Any,
    tenant_id: str,
    items: Items,
    options: WorkerOptions,
    now: datetime,
    dropped: list[str],
) -> list[Letter]:
    catalog = await catalog_reader.current(session, tenant_id)
    parked: list[Letter] = []
    for message_id, body in items:
        ctx = Context(
            tenant_id=tenant_id,
            actor=Actor(kind="system", id="worker ingest", scope=None),
            correlation_id=body.get("correlation_id") or "ingest",
            now=datetime.fromisoformat(body["received_at"]),
        )
        good: list[tuple[Any, UsageEvent]] = []
        for raw in body["events"]:
            event, fault = _checked(raw)
            if event is None:
                parked.append(_letter(tenant_id, message_id, body, raw, fault or "refused"))
            else:
                good.append((raw, event))
        if not good:
            continue
        outcomes, _overages = await ingest(
            session, ctx, catalog, [event for _raw, event in good], late_window=options.late_window
        )
        by_key = {o.idempotency_key: o for o in outcomes if o.status == "rejected"}
        for raw, event in good:
            rejected = by_key.get(event.idempotency_key)
            if rejected is not None and rejected.code == REUSED:
                # A client's retry with another body: the API answered it already, and
                # an operator can do nothing about it; dropped and logged (0023, 0024).
                log.warning(
                    "ingest: dropped event %s of tenant %s (message %s): %s: %s",
                    event.idempotency_key,
                    tenant_id,
                    message_id,
                    rejected.code,
                    rejected.reason,
                )
                dropped.append(rejected.code)
            elif rejected is not None:
                reason = f"{rejected.code}: {rejected.reason}"
                parked.append(_letter(tenant_id, message_id, body, raw, reason))
    for letter in parked:
        await deadletters.park(session, letter, now)
    return parked


def _letter(
    tenant_id: str, message_id: str | None, body: dict[str, Any], raw: Any, error: str
) -> Letter:
    return deadletters.event_letter(
        tenant_id=tenant_id,
        message_id=message_id,
        received_at=datetime.fromisoformat(body["received_at"]),
        correlation_id=body.get("correlation_id"),
        raw=raw,
        error=error,
    )


# SQLSTATE classes of failures that are the database's, not the data's: connection,
# transaction rollback (serialization, deadlock), resources, operator intervention.
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})


async def _poisoned(database: Database, error: Exception) -> bool:
    """The work failed for what it holds, not because the database is unwell: the error
    is not a connection, locking or resource failure, and the database still answers."""
    if isinstance(error, DBAPIError):
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        if error.connection_invalidated:
            return False
        if isinstance(state, str):
            if state[:2] in TRANSIENT_CLASSES:
                return False
        elif isinstance(error, OperationalError | InterfaceError):
            return False  # SQLite: locked, disk I/O, unable to open
    elif isinstance(error, OSError | TimeoutError):
        return False
    try:
        async with database.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def _describe(error: BaseException) -> str:
    """The database's own words (and SQLSTATE), on one line."""
    origin = getattr(error, "orig", None) or error
    state = getattr(origin, "sqlstate", None)
    said = str(origin).splitlines()[0] if str(origin) else type(origin).__name__
    return f"{said} (SQLSTATE {state})" if state else f"{type(origin).__name__}: {said}"


async def replay(
    database: Database, letter_id: int, options: WorkerOptions, now: datetime
) -> str | None:
    """Ingest a dead letter again: "stored" (and removed), "parked" (it failed again, one
    more attempt on its row), or None if there is no such letter. A message that now
    decodes is stored like one from the stream: its bad events are parked on their own."""
    async with database.transaction(write=False) as session:
        row = await deadletters.get(session, letter_id)
    if row is None:
        return None
    if row.kind == deadletters.MESSAGE:
        body, fault = decode(deadletters.raw_message(row))
        if body is None:
            async with database.transaction() as session:
                await deadletters.failed_again(session, letter_id, fault or "undecodable", now)
            return "parked"
        items: Items = [(row.message_id, body)]
    else:
        body = {
            "tenant_id": row.tenant_id,
            "received_at": row.received_at.isoformat(),
            "correlation_id": row.correlation_id,
            "events": [deadletters.raw_event(row)],
        }
        items = [(row.message_id, body)]
    parked = await store(database, items, options, now)
    if row.kind == deadletters.EVENT and parked:
        return "parked"  # the same event parked again: its row counted one more attempt
    async with database.transaction() as session:
        await deadletters.drop(session, letter_id)
    return "stored"
