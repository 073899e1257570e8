"""A customer's current grants, held in process memory between changes.

An entry holds every grant of a customer that has not ended yet (including ones that start
later), so it stays right as time passes: resolution still filters by the moment asked
about. Any change to the customer's grants, the customer's creation, or the catalog
evicts it (see `billfold.kit.changes`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

from billfold.catalog.catalog import Catalog
from billfold.grants import resolution
from billfold.grants.resolution import Entitlement, Grant
from billfold.kit.changes import Generations
from billfold.kit.invariants import invariant

_BEFORE = datetime.min.replace(tzinfo=UTC)
_AFTER = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Snapshot:
    customer_id: str | None  # None: the customer does not exist (yet)
    catalog_revision: int
    grants: tuple[Grant, ...]
    # Features resolved so far, each with the span [from, until) over which the set of
    # live grants, and so the answer, stays the same.
    _resolved: dict[str, tuple[datetime, datetime, Entitlement]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def entitlement(self, catalog: Catalog, key: str, moment: datetime) -> Entitlement:
        """One feature resolved at `moment`, computed once per span between grant edges."""
        return self.span(catalog, key, moment)[2]

    def span(
        self, catalog: Catalog, key: str, moment: datetime
    ) -> tuple[datetime, datetime, Entitlement]:
        """One feature resolved at `moment`, with the span [from, until) around `moment`
        over which the answer stays the same."""
        invariant(catalog.revision == self.catalog_revision, "snapshot of another catalog")
        held = self._resolved.get(key)
        if held is not None and held[0] <= moment < held[1]:
            return held
        entitlement = resolution.resolve(catalog, self.grants, moment, [key])[key]
        since, until = _BEFORE, _AFTER
        for grant in self.grants:  # a grant is live over [starts_at, effective_end)
            for edge in (grant.starts_at, grant.effective_end):
                if edge is None:
                    continue
                if edge <= moment:
                    since = max(since, edge)
                else:
                    until = min(until, edge)
        held = self._resolved[key] = (since, until, entitlement)
        return held


class SnapshotCache:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._entries: OrderedDict[tuple[str, str], Snapshot] = OrderedDict()
        self._generations = Generations()
        self._max_entries = max_entries

    def get(self, tenant_id: str, external_id: str, catalog_revision: int) -> Snapshot | None:
        key = (tenant_id, external_id)
        snapshot = self._entries.get(key)
        if snapshot is None or snapshot.catalog_revision != catalog_revision:
            return None
        self._entries.move_to_end(key)
        return snapshot

    def stamp(self, tenant_id: str, external_id: str) -> tuple[int, int]:
        return self._generations.stamp((tenant_id, external_id))

    def store(
        self, tenant_id: str, external_id: str, snapshot: Snapshot, stamp: tuple[int, int]
    ) -> None:
        key = (tenant_id, external_id)
        if not self._generations.current(key, stamp):
            return  # something changed while we were reading: do not keep old data
        self._entries[key] = snapshot
        if len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def on_change(self, topic: str) -> None:
        kind, _, rest = topic.partition(":")
        if kind == "customer":
            tenant_id, _, external_id = rest.partition(":")
            key = (tenant_id, external_id)
            self._generations.bump(key)
            self._entries.pop(key, None)
        elif kind == "catalog":
            self.reset()

    def reset(self) -> None:
        self._generations.reset()
        self._entries.clear()
