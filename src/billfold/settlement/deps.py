"""Settlement's collaborator, wired once at the edge from the deployment's settings: the
mode and the platform's fee (domains never read the settings themselves)."""

from __future__ import annotations

from billfold.settings import Settings
from billfold.settlement.records import Policy


def wire(settings: Settings) -> Policy:
    return Policy(mode=settings.mode, fee_percent=settings.platform_fee_percent)
