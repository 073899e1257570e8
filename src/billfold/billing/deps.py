"""Period close's settings, wired at the edge from the deployment's settings."""

from __future__ import annotations

from datetime import timedelta

from billfold.billing.close import CloseSettings
from billfold.invoicing import deps as invoicing_deps
from billfold.invoicing.records import Numbering
from billfold.settings import Settings


def wire(settings: Settings) -> CloseSettings:
    """How period close makes and finalizes invoices: the grace, the numbering, and the
    invoicing file (read here, once)."""
    return CloseSettings(
        grace=timedelta(seconds=settings.invoice_grace_s),
        numbering=Numbering(prefix=settings.invoice_prefix, due_days=settings.invoice_due_days),
        invoicing=invoicing_deps.wire(settings),
        suspend_after=timedelta(days=settings.suspend_after_days),
    )
