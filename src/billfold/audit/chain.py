"""How an event-log entry is hashed into its tenant's chain.

An entry's hash covers its previous entry's hash and its own fields, so an edit breaks
the entry itself, and a move or a deletion breaks the link of the entry after it. The
sequence number is left out of the hash on purpose: order is what the links prove.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the entry's fields as canonical JSON."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def hashed_fields(
    *,
    tenant_id: str,
    type: str,
    customer_id: str | None,
    data: Mapping[str, Any],
    actor_kind: str,
    actor_id: str | None,
    actor_scope: str | None,
    correlation_id: str,
    occurred_at: datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": tenant_id,
        "type": type,
        "customer_id": customer_id,
        "data": dict(data),
        "actor_kind": actor_kind,
        "actor_id": actor_id,
        "actor_scope": actor_scope,
        "correlation_id": correlation_id,
        "occurred_at": canonical_time(occurred_at),
    }
