"""Claim batches as CSV: the same file from the CLI and from the API."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from billfold.claims.service import LIFETIME, Batch
from billfold.kit.errors import FieldError, InvalidInput

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
    # Added after the first nine, which keep their places: a feature code's feature and
    # its value (JSON), and the batch's whole metadata (JSON, campaign and tier included).
    "feature",
    "value",
    "metadata",
    # Then the wallet credit a redemption adds (JSON: unit, amount, expires_in_days,
    # priority), empty for a code without.
    "wallet_credit",
)


def batch_metadata(
    campaign: str | None, tier: str | None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`campaign` and `tier` (the CSV's own columns) with the rest of the metadata; the
    same key given twice is refused."""
    metadata = dict(extra or {})
    for key, value in (("campaign", campaign), ("tier", tier)):
        if value is None:
            continue
        if key in metadata and metadata[key] != value:
            raise InvalidInput(
                f"{key} is given twice",
                errors=[FieldError(f"conflicts with metadata.{key}", pointer=f"#/{key}")],
            )
        metadata[key] = value
    return metadata


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


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
                batch.plan or "",
                duration_label(batch.duration_days),
                batch.max_redemptions,
                batch.expires_at.isoformat() if batch.expires_at else "",
                batch.source,
                batch.metadata.get("campaign", ""),
                batch.metadata.get("tier", ""),
                batch.feature or "",
                "" if batch.feature is None else _json(batch.value),
                _json(batch.metadata),
                "" if batch.wallet_credit is None else _json(vars(batch.wallet_credit)),
            )
        )
    return buffer.getvalue()
