"""Usage past one machine: the API appends accepted events to a NATS JetStream stream,
and `billfold worker ingest` drains it into the store in batches.

A message is one request's checked events. The API answers once JetStream has stored it
(the publish ack). A worker writes a batch of messages in one transaction, then acks
them. A worker killed before its ack leaves the messages to be delivered again, and the
unique (tenant, idempotency key) constraint makes the second write a no-op. So every
event is stored, and drawn from quotas, exactly once. Several workers share one durable
consumer, and each message goes to one of them at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.client import JetStreamContext

from billfold.catalog import catalog as catalog_reader
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.kit.worker import Runner
from billfold.metering.events import UsageEvent
from billfold.metering.ingest import ingest

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


async def run_worker(database: Database, options: WorkerOptions, stop: asyncio.Event) -> int:
    """Drain the stream on the shared worker runner until `stop` is set; returns how many
    messages were stored."""
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
        source = StreamSource(database, subscription, options)
        progress = await Runner("ingest", source, batch=options.batch).run(stop)
        return progress.items
    finally:
        # Everything fetched was acked or will be redelivered; nothing needs draining.
        await client.close()


class StreamSource:
    """The stream as a `kit.worker.Source`: a batch of messages is stored in one
    transaction per tenant, then acknowledged; a failed one is handed back to JetStream."""

    def __init__(
        self,
        database: Database,
        subscription: JetStreamContext.PullSubscription,
        options: WorkerOptions,
    ) -> None:
        self._database = database
        self._subscription = subscription
        self._options = options

    async def take(self, limit: int) -> list[Msg]:
        return await next_batch(self._subscription, limit)

    async def handle(self, batch: Sequence[Msg], stop: asyncio.Event) -> None:
        await _store(self._database, [json.loads(m.data) for m in batch], self._options)
        for message in batch:  # only after the commit: a crash means redelivery
            await message.ack()

    async def failed(self, batch: Sequence[Msg], error: Exception, retry_in_s: float) -> None:
        for message in batch:
            await message.nak(delay=retry_in_s)


async def next_batch(subscription: JetStreamContext.PullSubscription, size: int) -> list[Msg]:
    """Up to `size` messages, or none after a second of quiet."""
    try:
        return await subscription.fetch(size, timeout=1)
    except TimeoutError:
        # nats-py raises its own TimeoutError (a subclass of this one) or, when the deadline
        # lapses between its two pull requests, the builtin one. Both mean "nothing yet".
        return []


async def _store(database: Database, bodies: list[dict[str, Any]], options: WorkerOptions) -> None:
    """One transaction per tenant in the batch: insert new events and draw quotas."""
    by_tenant: dict[str, list[dict[str, Any]]] = {}
    for body in bodies:
        by_tenant.setdefault(body["tenant_id"], []).append(body)
    for tenant_id, tenant_bodies in by_tenant.items():
        async with database.transaction() as session:
            catalog = await catalog_reader.current(session, tenant_id)
            for body in tenant_bodies:
                ctx = Context(
                    tenant_id=tenant_id,
                    actor=Actor(kind="system", id="worker ingest", scope=None),
                    correlation_id=body.get("correlation_id") or "ingest",
                    now=datetime.fromisoformat(body["received_at"]),
                )
                events = [_event_of(raw) for raw in body["events"]]
                await ingest(session, ctx, catalog, events, late_window=options.late_window)
