"""The grants domain's collaborators: the snapshot cache of customers' grants, which the
change feed keeps correct (a route reads it as `call.cache(SnapshotCache)`)."""

from __future__ import annotations

from billfold.grants.snapshots import SnapshotCache
from billfold.kit.changes import ChangeFeed


def wire(changes: ChangeFeed) -> SnapshotCache:
    snapshots = SnapshotCache()
    changes.subscribe(snapshots.on_change, snapshots.reset)
    return snapshots
