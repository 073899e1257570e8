"""The states of a subscription and the transitions between them: the state machine every
change goes through. A transition it does not allow is a 409 naming the current state,
never a silent no-op.

    trialing ──> active ──> past_due ──> suspended
        │          ▲  │         │            │
        │          │  └─> paused│            │
        └──────────┴──────┴─────┴────────────┴──> canceled (final)

Entitlements follow the state: trialing, active and past_due grant the plan; paused,
suspended and canceled do not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from billfold.kit.errors import Conflict


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"  # at most one live subscription per customer (a partial unique index)
    PAST_DUE = "past_due"  # an invoice is overdue; entitlements stay while dunning runs
    SUSPENDED = "suspended"  # dunning gave up; entitlements stop until it is paid
    PAUSED = "paused"  # the customer paused it; nothing is billed, nothing granted
    CANCELED = "canceled"  # final

    @property
    def grants(self) -> bool:
        """Whether the plan's entitlements hold in this state."""
        return self in _GRANTING

    @property
    def live(self) -> bool:
        """Not canceled: the customer's one subscription that counts."""
        return self is not SubscriptionStatus.CANCELED


_GRANTING: Final = frozenset(
    {SubscriptionStatus.TRIALING, SubscriptionStatus.ACTIVE, SubscriptionStatus.PAST_DUE}
)
S = SubscriptionStatus
# Each state, and the states a change may move it to. Staying in a state (a renewal, a
# plan change) is allowed only where the state lists itself.
TRANSITIONS: Final[dict[SubscriptionStatus, frozenset[SubscriptionStatus]]] = {
    S.TRIALING: frozenset({S.TRIALING, S.ACTIVE, S.PAUSED, S.CANCELED}),
    S.ACTIVE: frozenset({S.ACTIVE, S.PAST_DUE, S.PAUSED, S.CANCELED}),
    S.PAST_DUE: frozenset({S.PAST_DUE, S.ACTIVE, S.SUSPENDED, S.CANCELED}),
    S.SUSPENDED: frozenset({S.ACTIVE, S.CANCELED}),
    S.PAUSED: frozenset({S.ACTIVE, S.CANCELED}),
    S.CANCELED: frozenset(),
}


class TransitionNotAllowed(Conflict):
    code = "subscription_transition_not_allowed"
    title = "The subscription's state does not allow this change"


def require(current: SubscriptionStatus, target: SubscriptionStatus, *, action: str) -> None:
    """Refuse `action` unless the state machine lets `current` become `target`."""
    if target not in TRANSITIONS[current]:
        allowed = sorted(state.value for state in TRANSITIONS[current]) or ["nothing"]
        raise TransitionNotAllowed(
            f"cannot {action} a {current} subscription",
            extra={"current_status": current.value, "allowed": allowed},
        )
