"""Process settings for a long-running server."""

from __future__ import annotations

import gc

# CPython's default (700, 10, 10) runs a collection every 700 net allocations and a full
# one every 70,000. A serving process allocates a few hundred objects a request and holds
# large caches, so full collections ran many times a second and walked every cached
# snapshot: the check API's p99 doubled. See docs/decisions/0010.
SERVER_GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc_for_serving() -> None:
    """Call once the app is built: what was loaded so far (the modules, the app) is never
    scanned again, and collections run far less often. Cyclic garbage is still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVER_GC_THRESHOLDS)
