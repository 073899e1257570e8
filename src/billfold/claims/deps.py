"""The claims domain's collaborators, wired once by the app from the settings: the key
that hashes codes, and the limits on redemption attempts."""

from __future__ import annotations

from dataclasses import dataclass

from billfold.claims.service import Attempts
from billfold.settings import Settings


@dataclass(frozen=True)
class Claims:
    secret_key: bytes  # keyed hashes of codes; kept outside the database
    attempts: Attempts


def wire(settings: Settings) -> Claims:
    return Claims(
        secret_key=settings.secret_key,
        attempts=Attempts(
            per_customer=settings.claim_attempts_per_customer,
            per_address=settings.claim_attempts_per_address,
            window_s=settings.claim_attempt_window_s,
        ),
    )
