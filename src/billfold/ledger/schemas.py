"""Request and response models of the ledger API. A transfer's fields are checked by
the ledger itself (`checks.py`), so a bad amount or id is refused with the ledger's own
stable code (`amount_not_positive`, `invalid_transfer`), as it would be in-process."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field

from billfold.kit.schemas import Body, Metadata, Out, Text
from billfold.ledger.records import (
    MAX_BATCH,
    Account,
    AccountType,
    BalanceRule,
    NewTransfer,
    Transfer,
    TransferKind,
)

TransferId = Annotated[str, Field(min_length=1, max_length=120)]
AccountId = Annotated[str, Field(min_length=1, max_length=40)]
Amount = Annotated[int, Field(description="minor units of the accounts' unit; positive")]


class AccountIn(Body):
    """An account, created once per code: the same code and fields answer the account
    again; other fields are refused (`account_exists_with_different_fields`)."""

    code: Annotated[str, Field(min_length=1, max_length=100)]
    type: AccountType
    unit: Annotated[str, Field(min_length=1, max_length=32)]
    rule: BalanceRule | None = None


class AccountOut(Out):
    id: str
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
    def of(cls, account: Account) -> AccountOut:
        return cls(
            id=account.id,
            code=account.code,
            type=account.type,
            unit=account.unit,
            rule=account.rule,
            debits_posted=account.debits_posted,
            credits_posted=account.credits_posted,
            debits_pending=account.debits_pending,
            credits_pending=account.credits_pending,
            created_at=account.created_at,
        )


class AccountsOut(Out):
    accounts: list[AccountOut]
    next_cursor: str | None


class TransferFields(Body):
    """One transfer: a plain or pending one names both accounts and an amount; a post or
    void names its pending transfer (`post_pending_id`, `void_pending_id`)."""

    id: TransferId
    debit_account_id: AccountId | None = None
    credit_account_id: AccountId | None = None
    amount: Amount | None = None
    code: Annotated[str, Field(max_length=100), Text] = ""
    pending: bool = False
    timeout_s: int | None = None
    post_pending_id: TransferId | None = None
    void_pending_id: TransferId | None = None
    metadata: Metadata | None = None

    def request(self) -> NewTransfer:
        return NewTransfer(
            id=self.id,
            debit_account_id=self.debit_account_id,
            credit_account_id=self.credit_account_id,
            amount=self.amount,
            code=self.code,
            pending=self.pending,
            timeout_s=self.timeout_s,
            post_pending_id=self.post_pending_id,
            void_pending_id=self.void_pending_id,
            metadata=self.metadata,
        )


class TransfersIn(Body):
    """One transfer (its fields), or a linked batch (`transfers`, all or nothing)."""

    id: TransferId | None = None
    debit_account_id: AccountId | None = None
    credit_account_id: AccountId | None = None
    amount: Amount | None = None
    code: Annotated[str, Field(max_length=100), Text] | None = None
    pending: bool | None = None
    timeout_s: int | None = None
    post_pending_id: TransferId | None = None
    void_pending_id: TransferId | None = None
    metadata: Metadata | None = None
    transfers: Annotated[list[TransferFields], Field(min_length=1, max_length=MAX_BATCH)] | None = (
        None
    )


class TransferOut(Out):
    id: str
    kind: TransferKind
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending_id: str | None
    timeout_s: int | None
    expires_at: datetime | None
    code: str
    metadata: dict[str, Any] | None
    created_at: datetime

    @classmethod
    def of(cls, transfer: Transfer) -> TransferOut:
        return cls(
            id=transfer.id,
            kind=transfer.kind,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=transfer.amount,
            unit=transfer.unit,
            pending_id=transfer.pending_id,
            timeout_s=transfer.timeout_s,
            expires_at=transfer.expires_at,
            code=transfer.code,
            metadata=None if transfer.metadata is None else dict(transfer.metadata),
            created_at=transfer.created_at,
        )


class TransfersOut(Out):
    transfers: list[TransferOut]


class TransferPageOut(Out):
    transfers: list[TransferOut]
    next_cursor: str | None
