"""The ledger's records (`Account`, `Transfer`), what a client asks for (`NewTransfer`)
and its refusals, each a problem type with a stable code (docs/ledger.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal, get_args

from billfold.kit.db import Record
from billfold.kit.errors import Conflict, InvalidInput, NotFound

AccountType = Literal["asset", "liability", "revenue", "expense", "equity"]
BalanceRule = Literal["debits_must_not_exceed_credits", "credits_must_not_exceed_debits"]
TransferKind = Literal["posted", "pending", "post", "void", "expire"]
ACCOUNT_TYPES: Final[tuple[str, ...]] = get_args(AccountType)
BALANCE_RULES: Final[tuple[str, ...]] = get_args(BalanceRule)
MAX_BATCH: Final = 1_000  # transfers in one linked batch
MAX_AMOUNT: Final = 2**63 - 1  # BIGINT
MAX_TIMEOUT_S: Final = 366 * 24 * 3600


class InvalidTransfer(InvalidInput):
    code = "invalid_transfer"
    title = "The transfer is not valid"


class InvalidAccount(InvalidInput):
    code = "invalid_account"
    title = "The ledger account is not valid"


class LedgerUnitsDiffer(InvalidInput):
    code = "ledger_units_differ"
    title = "A transfer's two accounts hold different units"


class AmountNotPositive(InvalidInput):
    code = "amount_not_positive"
    title = "A transfer moves a positive whole number of minor units"


class AccountNotFound(NotFound):
    code = "account_not_found"
    title = "No such ledger account"


class TransferNotFound(NotFound):
    code = "transfer_not_found"
    title = "No such ledger transfer"


class PendingTransferNotFound(NotFound):
    code = "pending_transfer_not_found"
    title = "No such pending transfer"


class TransferExistsWithDifferentFields(Conflict):
    code = "transfer_exists_with_different_fields"
    title = "A transfer with this id exists, with other fields"


class AccountExistsWithDifferentFields(Conflict):
    code = "account_exists_with_different_fields"
    title = "A ledger account with this code exists, with other fields"


class ExceedsCredits(Conflict):
    code = "exceeds_credits"
    title = "The account's debits would exceed its credits"


class ExceedsDebits(Conflict):
    code = "exceeds_debits"
    title = "The account's credits would exceed its debits"


class PendingTransferAlreadyResolved(Conflict):
    code = "pending_transfer_already_resolved"
    title = "The pending transfer was already posted, voided or expired"


class PendingTransferExpired(Conflict):
    code = "pending_transfer_expired"
    title = "The pending transfer's timeout has passed"


class PostExceedsPending(Conflict):
    code = "post_exceeds_pending"
    title = "A post larger than the pending transfer"


@dataclass(frozen=True)
class Account:
    id: str
    tenant_id: str
    code: str
    type: AccountType
    unit: str
    rule: BalanceRule | None
    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int
    created_at: datetime

    @classmethod
    def of(cls, row: Record) -> Account:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            code=row.code,
            type=row.type,
            unit=row.unit,
            rule=row.rule,
            debits_posted=int(row.debits_posted),
            credits_posted=int(row.credits_posted),
            debits_pending=int(row.debits_pending),
            credits_pending=int(row.credits_pending),
            created_at=row.created_at,
        )

    @property
    def balances(self) -> Balances:
        return Balances(
            self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending
        )


@dataclass(frozen=True)
class Balances:
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def moved(
        self,
        *,
        debits_posted: int = 0,
        credits_posted: int = 0,
        debits_pending: int = 0,
        credits_pending: int = 0,
    ) -> Balances:
        return Balances(
            self.debits_posted + debits_posted,
            self.credits_posted + credits_posted,
            self.debits_pending + debits_pending,
            self.credits_pending + credits_pending,
        )

    def breaks(self, rule: str | None) -> bool:
        """The balances break `rule`. A reservation counts against the side it would
        take from; what is pending in does not count until it is posted (as
        TigerBeetle's flags do)."""
        if rule == "debits_must_not_exceed_credits":
            return self.debits_posted + self.debits_pending > self.credits_posted
        if rule == "credits_must_not_exceed_debits":
            return self.credits_posted + self.credits_pending > self.debits_posted
        return False


@dataclass(frozen=True)
class NewTransfer:
    """What a client asks for. A plain or pending transfer names both accounts and a
    positive amount; a post or void names the pending transfer (`post_pending_id`,
    `void_pending_id`) and may leave the accounts and amount out (they default to the
    pending transfer's; a post may be for less). `timeout_s` is for a pending one only."""

    id: str
    debit_account_id: str | None = None
    credit_account_id: str | None = None
    amount: int | None = None
    code: str = ""
    pending: bool = False
    timeout_s: int | None = None
    post_pending_id: str | None = None
    void_pending_id: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Transfer:
    """A transfer as stored. `kind` is `posted` (plain), `pending`, or the resolution
    of the pending transfer `pending_id`: `post` (its amount is what was posted), `void`
    or `expire` (its amount is what was released)."""

    id: str
    tenant_id: str
    kind: TransferKind
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending_id: str | None
    timeout_s: int | None
    expires_at: datetime | None
    code: str
    metadata: Mapping[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, row: Record) -> Transfer:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            kind=row.kind,
            debit_account_id=row.debit_account_id,
            credit_account_id=row.credit_account_id,
            amount=int(row.amount),
            unit=row.unit,
            pending_id=row.pending_id,
            timeout_s=None if row.timeout_s is None else int(row.timeout_s),
            expires_at=row.expires_at,
            code=row.code,
            metadata=row.metadata,
            created_at=row.created_at,
        )

    def row(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "id": self.id,
            "kind": self.kind,
            "debit_account_id": self.debit_account_id,
            "credit_account_id": self.credit_account_id,
            "amount": self.amount,
            "unit": self.unit,
            "pending_id": self.pending_id,
            "timeout_s": self.timeout_s,
            "expires_at": self.expires_at,
            "code": self.code,
            "metadata": None if self.metadata is None else dict(self.metadata),
            "created_at": self.created_at,
        }
