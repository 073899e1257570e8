"""The ledger's collaborators, wired once by the app: the transfers' group commit and
its metrics on the app's registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

from billfold.kit.db import Database
from billfold.ledger.batcher import TransferBatcher


@dataclass(frozen=True)
class Ledger:
    batcher: TransferBatcher

    async def close(self) -> None:
        """Let the groups in hand commit."""
        await self.batcher.close()


def wire(database: Database, registry: CollectorRegistry) -> Ledger:
    group = Histogram(
        "billfold_ledger_group_size",
        "Transfer requests applied together in one transaction (group commit)",
        buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000),
        registry=registry,
    )
    alone = Counter(
        "billfold_ledger_group_fallbacks",
        "Transfer requests applied alone after their group's transaction failed as a whole",
        registry=registry,
    )
    return Ledger(TransferBatcher(database, on_group=group.observe, on_alone=alone.inc))
