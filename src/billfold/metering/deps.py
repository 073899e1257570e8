"""Metering's collaborators, wired once by the app: the consume group commit, the NATS
publisher (with `BILLFOLD_INGEST`), the deployment's ingest windows and enforcement, and
metering's own metrics on the app's registry."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram

from billfold.grants.snapshots import SnapshotCache
from billfold.kit.db import Database
from billfold.metering.ingest import IngestWindows
from billfold.metering.quotas.batcher import ConsumeBatcher
from billfold.metering.quotas.lookup import Enforcing
from billfold.settings import Settings, SettingsError

if TYPE_CHECKING:  # the NATS client is the optional extra `billfold[nats]`
    from billfold.metering.stream import UsagePublisher

NATS_MISSING = (
    "BILLFOLD_INGEST needs the NATS client, which is not installed: "
    "pip install 'billfold[nats]' (or unset BILLFOLD_INGEST)"
)


@dataclass(frozen=True)
class Metering:
    windows: IngestWindows
    enforcing: Enforcing
    consumer: ConsumeBatcher
    publisher: UsagePublisher | None  # BILLFOLD_INGEST: usage goes through NATS
    overage: Counter  # by feature and enforcement ("reported" for reported usage)
    wallet_paid: Counter  # minor units drawn from wallets for overage, by feature and unit
    wallet_refused: Counter  # consumes refused for a wallet short of their overage's cost

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
        publisher=_publisher(settings),
        overage=Counter(
            "billfold_quota_overage",
            "Usage beyond every quota bucket, in the meter's units, by feature and enforcement",
            ["feature", "enforcement"],
            registry=registry,
        ),
        wallet_paid=Counter(
            "billfold_consume_wallet_paid",
            "Minor units drawn from customers' wallets to pay consumes' overage",
            ["feature", "unit"],
            registry=registry,
        ),
        wallet_refused=Counter(
            "billfold_consume_wallet_refused",
            "Consumes refused (402 insufficient_balance): the wallet could not pay the overage",
            ["feature"],
            registry=registry,
        ),
    )


def nats_installed() -> bool:
    """Whether the optional NATS client (`billfold[nats]`) can be imported."""
    return importlib.util.find_spec("nats") is not None


def _publisher(settings: Settings) -> UsagePublisher | None:
    """The NATS publisher with BILLFOLD_INGEST; imported only then, as nats-py is optional."""
    if not settings.ingest:
        return None
    if not nats_installed():
        raise SettingsError(NATS_MISSING)
    from billfold.metering.stream import UsagePublisher

    return UsagePublisher(settings.ingest, settings.ingest_stream)
