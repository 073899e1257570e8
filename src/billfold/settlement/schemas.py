"""Settlement's request and response models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from billfold.kit.schemas import Body, Out, Quantity, Storable
from billfold.settlement.payouts import PERIOD, payees
from billfold.settlement.records import PayoutBatch, Settlement, SplitTable
from billfold.settlement.splits import MAX_SHARES

ShortText = Annotated[str, Field(max_length=200), Storable]


class ShareIn(Body):
    payee: ShortText = Field(description="1 to 48 letters, digits and _ . -")
    role: Literal["creator", "investor"]
    percent: Quantity = Field(description='a percentage, at most 4 decimal places: "62.5"')


class SplitIn(Body):
    """An app's split table: exactly one creator, any investors, shares summing to 100."""

    shares: Annotated[list[ShareIn], Field(max_length=10 * MAX_SHARES)]


class ShareOut(Out):
    payee: str
    role: str
    percent: str


class SplitOut(Out):
    app_id: str
    version: int
    shares: list[ShareOut]
    created_at: datetime

    @classmethod
    def of(cls, table: SplitTable) -> SplitOut:
        return cls(
            app_id=table.app_id,
            version=table.version,
            shares=[
                ShareOut(payee=s.payee, role=s.role, percent=str(s.percent)) for s in table.shares
            ],
            created_at=table.created_at,
        )


class SplitHistoryOut(Out):
    versions: list[SplitOut] = Field(description="newest first")
    next_before: int | None = Field(description="pass as `before` for older versions")


class SettlementIn(Body):
    """A succeeded payment to settle. `id` is yours, and its idempotency key."""

    id: ShortText = Field(description="1 to 48 letters, digits and _ . -")
    type: ShortText = Field(
        description="platform_subscription, private_app_purchase, investor_funding or "
        "public_app_purchase"
    )
    amount: int = Field(description="minor units of `currency`, positive")
    currency: Annotated[str, Field(max_length=16)]
    app_id: ShortText | None = Field(None, description="required for an app's transaction")
    payer: Annotated[str, Field(max_length=255), Storable] | None = None
    reference: Annotated[str, Field(max_length=255), Storable] | None = None


class PartOut(Out):
    role: str = Field(description="fee, revenue, creator or investor")
    account: str = Field(description="the ledger account credited")
    amount: int
    payee: str | None


class SettlementOut(Out):
    id: str
    type: str
    amount: int
    currency: str
    app_id: str | None
    payer: str | None
    reference: str | None
    mode: str = Field(description="the deployment's mode when it was settled")
    fee_percent: str | None = Field(description="none: no fee applied")
    fee: int
    split_version: int | None = Field(description="the app's split table version used")
    parts: list[PartOut]
    transfer_ids: list[str]
    created_at: datetime

    @classmethod
    def of(cls, made: Settlement) -> SettlementOut:
        return cls(
            id=made.id,
            type=made.type,
            amount=made.amount,
            currency=made.currency,
            app_id=made.app_id,
            payer=made.payer,
            reference=made.reference,
            mode=made.mode,
            fee_percent=None if made.fee_percent is None else str(made.fee_percent),
            fee=made.fee,
            split_version=made.split_version,
            parts=[
                PartOut(role=p.role, account=p.account, amount=p.amount, payee=p.payee)
                for p in made.parts
            ],
            transfer_ids=list(made.transfer_ids),
            created_at=made.created_at,
        )


class PayoutRunIn(Body):
    period: (
        Annotated[
            str,
            Field(
                pattern=PERIOD.pattern,
                description="the period's label; the day (UTC) of the run when left out",
                examples=["2026-06-01"],
            ),
        ]
        | None
    ) = None


class PayoutLineOut(Out):
    payee: str
    currency: str
    amount: int
    transfer_id: str


class PayoutBatchOut(Out):
    id: str
    period: str
    payees: list[str]
    lines: list[PayoutLineOut]
    created_at: datetime

    @classmethod
    def of(cls, batch: PayoutBatch) -> PayoutBatchOut:
        return cls(
            id=batch.id,
            period=batch.period,
            payees=payees(batch),
            lines=[
                PayoutLineOut(
                    payee=line.payee,
                    currency=line.currency,
                    amount=line.amount,
                    transfer_id=line.transfer_id,
                )
                for line in batch.lines
            ],
            created_at=batch.created_at,
        )
