"""Claim batches as CSV: the same file from the CLI and from the API."""

from __future__ import annotations

import csv
import io
from typing import Any

from billfold.claims.service import LIFETIME, Batch

CSV_MEDIA_TYPE = "text/csv"

CSV_COLUMNS = (
    "code",
    "batch_id",
    "plan",
    "duration",
    "max_redemptions",
    "expires_at",
    "source",
    "campaign",
    "tier",
)


def batch_metadata(campaign: str | None, tier: str | None) -> dict[str, Any]:
    return {k: v for k, v in (("campaign", campaign), ("tier", tier)) if v is not None}


def duration_label(days: int | None) -> str:
    return LIFETIME if days is None else f"{days}d"


def csv_of(batch: Batch, issued: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for code in issued:
        writer.writerow(
            (
                code,
                batch.id,
                batch.plan,
                duration_label(batch.duration_days),
                batch.max_redemptions,
                batch.expires_at.isoformat() if batch.expires_at else "",
                batch.source,
                batch.metadata.get("campaign", ""),
                batch.metadata.get("tier", ""),
            )
        )
    return buffer.getvalue()
