"""Invariant checks that survive `python -O` (unlike `assert`)."""

from __future__ import annotations


class InvariantViolation(RuntimeError):
    """A condition that must never be false was false: a bug, never a user error."""


def invariant(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)
