"""What the wallets domain hands out (`Lot`, `Spent`, `WalletBalance`, `Hold`, ...) and
its refusals, each a problem type with a stable code (docs/wallets.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from billfold.kit.db import Record
from billfold.kit.errors import BillfoldError, Conflict, InvalidInput, NotFound

Source = Literal["payment", "grant", "claim", "promotion", "credit_note", "refund"]
SOURCES: Final[tuple[str, ...]] = get_args(Source)
Alert = Literal["ok", "low", "exhausted"]
HoldStatus = Literal["held", "settled", "released", "expired"]
TopUpStatus = Literal["pending", "paid", "failed"]

# A reference (a credit's, a spend's, a top-up's) or a hold id becomes part of ledger
# transfer ids, so it keeps to their characters and leaves room for a prefix and a suffix.
REFERENCE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,79}$")
DEFAULT_PRIORITY: Final = 100  # lower numbers are drawn first
MAX_PRIORITY: Final = 1_000_000
MAX_LEGS: Final = 900  # lots one spend may draw from (a linked batch holds 1,000)
MAX_HOLD_TIMEOUT_S: Final = 30 * 24 * 3600
DEFAULT_HOLD_TIMEOUT_S: Final = 3600


class InsufficientBalance(BillfoldError):
    status = 402
    code = "insufficient_balance"
    title = "The wallet's balance does not cover this"


class InvalidWalletRequest(InvalidInput):
    code = "invalid_wallet_request"
    title = "The wallet request is not valid"


class WalletNotFound(NotFound):
    code = "wallet_not_found"
    title = "No such wallet"


class LotNotFound(NotFound):
    code = "lot_not_found"
    title = "No such wallet lot"


class HoldNotFound(NotFound):
    code = "hold_not_found"
    title = "No such hold"


class TopUpNotFound(NotFound):
    code = "top_up_not_found"
    title = "No such top-up"


class LotExistsWithDifferentFields(Conflict):
    code = "credit_exists_with_different_fields"
    title = "A credit with this source and reference exists, with other fields"


class SpendExistsWithDifferentFields(Conflict):
    code = "spend_exists_with_different_fields"
    title = "A spend with this reference exists, with other fields"


class HoldExistsWithDifferentFields(Conflict):
    code = "hold_exists_with_different_fields"
    title = "A hold with this id exists, with other fields"


class HoldAlreadyResolved(Conflict):
    code = "hold_already_resolved"
    title = "The hold was already settled, released or expired"


class TopUpExistsWithDifferentFields(Conflict):
    code = "top_up_exists_with_different_fields"
    title = "A top-up with this id exists, with other fields"


class TopUpAlreadyResolved(Conflict):
    code = "top_up_already_resolved"
    title = "The top-up's payment already succeeded or failed"


@dataclass(frozen=True)
class Lot:
    """One credit in a wallet: drawn in order of `priority` (lowest first), then
    `expires_at` (earliest first, never-expiring last), then `created_at`."""

    id: str
    wallet_id: str
    account_id: str
    source: str
    reference: str
    unit: str
    amount: int
    priority: int
    expires_at: datetime | None
    funded_by: str
    transfer_id: str
    created_at: datetime

    @classmethod
    def of(cls, row: Record | Mapping[str, Any], unit: str) -> Lot:
        """From a stored row, or from the values just inserted."""
        values = row if isinstance(row, Mapping) else row._mapping
        return cls(
            id=values["id"],
            wallet_id=values["wallet_id"],
            account_id=values["account_id"],
            source=values["source"],
            reference=values["reference"],
            unit=unit,
            amount=int(values["amount"]),
            priority=int(values["priority"]),
            expires_at=values["expires_at"],
            funded_by=values["funded_by"],
            transfer_id=values["transfer_id"],
            created_at=values["created_at"],
        )


@dataclass(frozen=True)
class Leg:
    """What one transfer of a spend or hold took from one lot."""

    lot_id: str
    transfer_id: str
    amount: int

    def as_dict(self) -> dict[str, Any]:
        return {"lot_id": self.lot_id, "transfer_id": self.transfer_id, "amount": self.amount}

    @classmethod
    def of(cls, value: dict[str, Any]) -> Leg:
        return cls(str(value["lot_id"]), str(value["transfer_id"]), int(value["amount"]))


@dataclass(frozen=True)
class Spent:
    """A spend as made (or as stored, for a retry of its reference): what it drew, from
    which lots by which transfers, and the wallet's available balance right after."""

    reference: str
    wallet_id: str | None
    unit: str
    requested: int
    amount: int
    legs: tuple[Leg, ...]
    balance_after: int
    created_at: datetime

    @property
    def transfer_ids(self) -> list[str]:
        return [leg.transfer_id for leg in self.legs]

    @property
    def shortfall(self) -> int:
        return self.requested - self.amount


@dataclass(frozen=True)
class WalletBalance:
    """`posted`: what the live lots hold; `held`: what holds reserve of it; `available`:
    posted less held, what a spend may draw. Lots past their expiry are left out, even
    before the expiry job moves them to breakage."""

    wallet_id: str | None
    customer_id: str
    unit: str
    posted: int
    held: int
    available: int
    low_balance: int | None


@dataclass(frozen=True)
class Wallet:
    id: str
    tenant_id: str
    customer_id: str
    unit: str
    low_balance: int | None
    alert: Alert
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Record) -> Wallet:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            customer_id=row.customer_id,
            unit=row.unit,
            low_balance=None if row.low_balance is None else int(row.low_balance),
            alert=row.alert,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class HoldExpired(Conflict):
    code = "hold_expired"
    title = "The hold's timeout has passed: it can no longer be settled"


@dataclass(frozen=True)
class Hold:
    """A reservation on a wallet: pending ledger transfers from its lots (`legs`, in
    consumption order) to `to_account`, until it is settled, released or times out."""

    id: str
    hold_id: str
    wallet_id: str
    unit: str
    amount: int
    to_account: str
    timeout_s: int
    expires_at: datetime
    status: HoldStatus
    legs: tuple[Leg, ...]
    settled_amount: int | None
    resolution_transfer_ids: tuple[str, ...]
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, row: Record, unit: str) -> Hold:
        resolution = row.resolution or {}
        return cls(
            id=row.id,
            hold_id=row.hold_id,
            wallet_id=row.wallet_id,
            unit=unit,
            amount=int(row.amount),
            to_account=row.to_account,
            timeout_s=int(row.timeout_s),
            expires_at=row.expires_at,
            status=row.status,
            legs=tuple(Leg.of(leg) for leg in row.legs),
            settled_amount=None if row.settled_amount is None else int(row.settled_amount),
            resolution_transfer_ids=tuple(resolution.get("transfer_ids", ())),
            created_at=row.created_at,
            resolved_at=row.resolved_at,
        )

    @property
    def transfer_ids(self) -> list[str]:
        return [leg.transfer_id for leg in self.legs]


@dataclass(frozen=True)
class TopUp:
    """A top-up: a grant or promotion is credited at once (`paid`); a payment waits
    `pending` until the payment succeeds (`paid`, its lot credited) or fails."""

    id: str
    wallet_id: str
    unit: str
    source: str
    reference: str
    amount: int
    priority: int
    expires_at: datetime | None
    status: TopUpStatus
    lot_id: str | None
    payment_reference: str | None
    failure: str | None
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, row: Record, unit: str) -> TopUp:
        return cls(
            id=row.id,
            wallet_id=row.wallet_id,
            unit=unit,
            source=row.source,
            reference=row.reference,
            amount=int(row.amount),
            priority=int(row.priority),
            expires_at=row.expires_at,
            status=row.status,
            lot_id=row.lot_id,
            payment_reference=row.payment_reference,
            failure=row.failure,
            created_at=row.created_at,
            resolved_at=row.resolved_at,
        )


@dataclass(frozen=True)
class Movement:
    """One ledger transfer into or out of one of a wallet's lots, as its history shows
    it (`service.transactions`)."""

    transfer_id: str
    lot_id: str
    kind: str
    code: str
    direction: Literal["in", "out"]
    amount: int
    pending_id: str | None
    created_at: datetime
