"""Settlement's records (split tables, settlements, payout batches), what a caller asks
for, the policy the edge wires in, and the refusals, each with a stable code."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, get_args

from billfold.kit.db import Record
from billfold.kit.errors import Conflict, InvalidInput, NotFound
from billfold.settlement.splits import Share

Mode = Literal["self-hosted", "platform"]
TransactionType = Literal[
    "platform_subscription", "private_app_purchase", "investor_funding", "public_app_purchase"
]
TRANSACTION_TYPES: Final[tuple[str, ...]] = get_args(TransactionType)
# The types that belong to an app: they name one (`app_id`), and in platform mode pay its
# creator (and, for a public app, its investors) from its split table.
APP_TYPES: Final = frozenset({"private_app_purchase", "investor_funding", "public_app_purchase"})
# A settlement's id (the client's, its idempotency key) and an app's id. No `:`: both
# are parts of ledger transfer ids and account codes.
CLIENT_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,47}$")
PartRole = Literal["fee", "revenue", "creator", "investor"]


class InvalidSettlement(InvalidInput):
    code = "invalid_settlement"
    title = "The settlement is not valid"


class AppIdRequired(InvalidInput):
    code = "app_id_required"
    title = "An app's transaction names its app"


class SplitTableNotFound(NotFound):
    code = "split_table_not_found"
    title = "The app has no split table"


class SettlementNotFound(NotFound):
    code = "settlement_not_found"
    title = "No such settlement"


class SettlementExistsWithDifferentFields(Conflict):
    code = "settlement_exists_with_different_fields"
    title = "A settlement with this id exists, with other fields"


class PayoutBatchNotFound(NotFound):
    code = "payout_batch_not_found"
    title = "No such payout batch"


class PayoutPayeeNotFound(NotFound):
    code = "payout_payee_not_found"
    title = "The payout batch pays nothing to this payee"


@dataclass(frozen=True)
class Policy:
    """What the deployment says about settlement, wired at the edge (`deps.wire`): the
    mode, and the platform's fee percentage (applied in platform mode only)."""

    mode: Mode
    fee_percent: Decimal


@dataclass(frozen=True)
class SplitTable:
    app_id: str
    version: int
    shares: tuple[Share, ...]
    created_at: datetime

    @property
    def creator(self) -> Share:
        return next(share for share in self.shares if share.role == "creator")

    @classmethod
    def of(cls, row: Record) -> SplitTable:
        return cls(
            app_id=row.app_id,
            version=int(row.version),
            shares=shares_of(row.shares),
            created_at=row.created_at,
        )


def shares_as_json(shares: tuple[Share, ...]) -> list[dict[str, str]]:
    return [{"payee": s.payee, "role": s.role, "percent": str(s.percent)} for s in shares]


def shares_of(stored: Any) -> tuple[Share, ...]:
    return tuple(Share(item["payee"], item["role"], Decimal(item["percent"])) for item in stored)


@dataclass(frozen=True)
class SettlementRequest:
    """A succeeded payment to settle. `id` is the client's and its idempotency key;
    `amount` is in minor units of `currency`."""

    id: str
    type: TransactionType
    amount: int
    currency: str
    app_id: str | None = None
    payer: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class Part:
    """Where part of a settled amount went: the ledger account credited, for whom."""

    role: PartRole
    account: str
    amount: int
    payee: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "account": self.account,
            "amount": self.amount,
            "payee": self.payee,
        }


@dataclass(frozen=True)
class Settlement:
    id: str
    type: TransactionType
    amount: int
    currency: str
    app_id: str | None
    payer: str | None
    reference: str | None
    mode: Mode
    fee_percent: Decimal | None  # None in self-hosted mode: no fee was applied
    fee: int
    split_version: int | None  # the split table's version the shares came from
    parts: tuple[Part, ...]
    transfer_ids: tuple[str, ...]
    created_at: datetime

    @property
    def request(self) -> SettlementRequest:
        return SettlementRequest(
            self.id, self.type, self.amount, self.currency, self.app_id, self.payer, self.reference
        )

    def row(self, tenant_id: str) -> dict[str, Any]:
        return {
            "tenant_id": tenant_id,
            "id": self.id,
            "type": self.type,
            "amount": self.amount,
            "currency": self.currency,
            "app_id": self.app_id,
            "payer": self.payer,
            "reference": self.reference,
            "mode": self.mode,
            "fee_percent": self.fee_percent,
            "fee": self.fee,
            "split_version": self.split_version,
            "parts": [part.as_json() for part in self.parts],
            "transfer_ids": list(self.transfer_ids),
            "created_at": self.created_at,
        }

    @classmethod
    def of(cls, row: Record) -> Settlement:
        return cls(
            id=row.id,
            type=row.type,
            amount=int(row.amount),
            currency=row.currency,
            app_id=row.app_id,
            payer=row.payer,
            reference=row.reference,
            mode=row.mode,
            fee_percent=row.fee_percent,
            fee=int(row.fee),
            split_version=None if row.split_version is None else int(row.split_version),
            parts=tuple(
                Part(p["role"], p["account"], int(p["amount"]), p.get("payee")) for p in row.parts
            ),
            transfer_ids=tuple(row.transfer_ids),
            created_at=row.created_at,
        )


@dataclass(frozen=True)
class PayoutLine:
    payee: str
    currency: str
    amount: int
    transfer_id: str


@dataclass(frozen=True)
class PayoutBatch:
    id: str
    period: str
    lines: tuple[PayoutLine, ...]
    created_at: datetime
    created: bool = False  # made by this run (False: the period's batch was already there)

    def total(self, currency: str) -> int:
        return sum(line.amount for line in self.lines if line.currency == currency)
