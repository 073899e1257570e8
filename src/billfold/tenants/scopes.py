"""API key scopes and what each one may do. The only table of its kind."""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    INTERNAL = "internal"
    READONLY = "readonly"
    AGENT = "agent"


class Permission(StrEnum):
    READ = "read"  # read any state of the tenant
    CHECK = "check"  # ask what a customer may do (changes nothing)
    REPORT = "report"  # report usage events
    REDEEM = "redeem"  # redeem a claim code on a customer's behalf
    SYNC = "sync"  # push subscription state from an external control plane
    ADMIN = "admin"  # change plans, grants, subscriptions, claim codes, keys

    @property
    def changes_state(self) -> bool:
        return self in (Permission.REPORT, Permission.REDEEM, Permission.SYNC, Permission.ADMIN)


GRANTED: dict[Scope, frozenset[Permission]] = {
    Scope.ADMIN: frozenset(Permission),
    Scope.SERVICE: frozenset(
        {Permission.READ, Permission.CHECK, Permission.REPORT, Permission.REDEEM}
    ),
    Scope.INTERNAL: frozenset({Permission.READ, Permission.CHECK, Permission.SYNC}),
    Scope.READONLY: frozenset({Permission.READ, Permission.CHECK}),
    # Agents read, explain and (later) propose; they never change state.
    Scope.AGENT: frozenset({Permission.READ, Permission.CHECK}),
}
