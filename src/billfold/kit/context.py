"""Who is acting, for which tenant, under which correlation id, and at what instant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ActorKind = Literal["api_key", "operator", "system"]


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    id: str | None
    scope: str | None


@dataclass(frozen=True)
class Context:
    """Passed to every service call. `now` is read from the clock once per request."""

    tenant_id: str
    actor: Actor
    correlation_id: str
    now: datetime
