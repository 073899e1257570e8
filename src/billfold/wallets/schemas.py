"""Request and response models of the wallets API. Amounts are integers of the unit's
minor units; whether one is positive is the service's refusal (`amount_not_positive`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from billfold.kit.schemas import Body, Instant, Out, Text
from billfold.wallets.records import (
    DEFAULT_HOLD_TIMEOUT_S,
    DEFAULT_PRIORITY,
    Hold,
    Movement,
    TopUp,
    WalletBalance,
)

CustomerId = Annotated[str, Field(min_length=1, max_length=255)]
Unit = Annotated[str, Field(min_length=1, max_length=32, examples=["credits", "USD"])]
Reference = Annotated[str, Field(min_length=1, max_length=80)]


class TopUpIn(Body):
    """Credit a wallet: `grant` and `promotion` now, `payment` once it is paid."""

    customer_id: CustomerId
    unit: Unit
    amount: int
    source: Literal["grant", "promotion", "payment"] = "grant"
    reference: Reference | None = None
    expires_at: Instant | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    priority: Annotated[int, Field(ge=0, le=1_000_000)] = DEFAULT_PRIORITY


class MarkPaidIn(Body):
    payment_reference: Reference | None = None


class MarkFailedIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class WalletCheckIn(Body):
    customer_id: CustomerId
    unit: Unit
    amount: int


class HoldIn(Body):
    hold_id: Reference
    customer_id: CustomerId
    unit: Unit
    amount: int
    timeout_s: int = DEFAULT_HOLD_TIMEOUT_S


class SettleIn(Body):
    amount: int


class ThresholdIn(Body):
    customer_id: CustomerId
    unit: Unit
    low_balance: int | None


class WalletOut(Out):
    id: str | None
    customer_id: str
    unit: str
    posted: int
    held: int
    available: int
    low_balance: int | None

    @classmethod
    def of(cls, found: WalletBalance) -> WalletOut:
        return cls(
            id=found.wallet_id,
            customer_id=found.customer_id,
            unit=found.unit,
            posted=found.posted,
            held=found.held,
            available=found.available,
            low_balance=found.low_balance,
        )


class WalletsOut(Out):
    customer_id: str
    wallets: list[WalletOut]


class WalletCheckOut(Out):
    allowed: bool
    unit: str
    amount: int
    available: int
    shortfall: int


class TopUpOut(Out):
    id: str
    wallet_id: str
    unit: str
    source: str
    reference: str
    amount: int
    priority: int
    expires_at: datetime | None
    status: Literal["pending", "paid", "failed"]
    lot_id: str | None
    payment_reference: str | None
    failure: Text | None
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, made: TopUp) -> TopUpOut:
        return cls(**vars(made))


class LegOut(Out):
    lot_id: str
    transfer_id: str
    amount: int


class HoldOut(Out):
    hold_id: str
    wallet_id: str
    unit: str
    amount: int
    to_account: str
    timeout_s: int
    expires_at: datetime
    status: Literal["held", "settled", "released", "expired"]
    legs: list[LegOut]
    settled_amount: int | None
    resolution_transfer_ids: list[str]
    created_at: datetime
    resolved_at: datetime | None

    @classmethod
    def of(cls, hold: Hold) -> HoldOut:
        return cls(
            hold_id=hold.hold_id,
            wallet_id=hold.wallet_id,
            unit=hold.unit,
            amount=hold.amount,
            to_account=hold.to_account,
            timeout_s=hold.timeout_s,
            expires_at=hold.expires_at,
            status=hold.status,
            legs=[LegOut(**leg.as_dict()) for leg in hold.legs],
            settled_amount=hold.settled_amount,
            resolution_transfer_ids=list(hold.resolution_transfer_ids),
            created_at=hold.created_at,
            resolved_at=hold.resolved_at,
        )


class MovementOut(Out):
    transfer_id: str
    lot_id: str
    kind: str
    code: str
    direction: Literal["in", "out"]
    amount: int
    pending_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, movement: Movement) -> MovementOut:
        return cls(**vars(movement))


class TransactionsOut(Out):
    wallet_id: str
    transactions: list[MovementOut]
    next_cursor: str | None
