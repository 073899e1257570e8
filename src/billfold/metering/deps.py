"""Metering's collaborators, wired once by the app: the consume group commit, the NATS
publisher (with `BILLFOLD_INGEST`), the deployment's ingest windows and enforcement, and
metering's own metrics on the app's registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter, Histogram

from billfold.grants.snapshots import SnapshotCache
from billfold.kit.db import Database
from billfold.metering.ingest import IngestWindows
from billfold.metering.quotas.batcher import ConsumeBatcher
from billfold.metering.quotas.lookup import Enforcing
from billfold.metering.stream import UsagePublisher
from billfold.settings import Settings


@dataclass(frozen=True)
class Metering:
    windows: IngestWindows
    enforcing: Enforcing
    consumer: ConsumeBatcher
    publisher: UsagePublisher | None  # BILLFOLD_INGEST: usage goes through NATS
    overage: Counter  # by feature and enforcement ("reported" for reported usage)

    async def close(self) -> None:
        """Let the consume batches in hand commit, then close the NATS connection."""
        await self.consumer.close()
        if self.publisher is not None:
            await self.publisher.close()


def wire(
    settings: Settings,
    database: Database,
    registry: CollectorRegistry,
    snapshots: Callable[[], SnapshotCache | None],
) -> Metering:
    consume_batch = Histogram(
        "billfold_consume_batch_size",
        "Consumes recorded together in one batch (group commit)",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
        registry=registry,
    )
    consume_unlocked = Counter(
        "billfold_consume_unlocked",
        "Consumes answered by a batch's unlocked run (PostgreSQL, decision 0018)",
        registry=registry,
    )
    consume_redrawn = Counter(
        "billfold_consume_redrawn",
        "Consumes drawn again under lock: their account moved during an unlocked draw, "
        "they write the event log, or their key was stored already",
        registry=registry,
    )
    windows = IngestWindows(
        late=timedelta(seconds=settings.usage_late_window_s),
        skew=timedelta(seconds=settings.usage_clock_skew_s),
    )
    return Metering(
        windows=windows,
        enforcing=Enforcing(settings.enforcement, platform=settings.mode == "platform"),
        consumer=ConsumeBatcher(
            database,
            late_window=windows.late,
            snapshots=snapshots,
            on_batch=consume_batch.observe,
            on_redraw=consume_redrawn.inc,
            on_unlocked=consume_unlocked.inc,
        ),
        publisher=(
            UsagePublisher(settings.ingest, settings.ingest_stream) if settings.ingest else None
        ),
        overage=Counter(
            "billfold_quota_overage",
            "Usage beyond every quota bucket, in the meter's units, by feature and enforcement",
            ["feature", "enforcement"],
            registry=registry,
        ),
    )
