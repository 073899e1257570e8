"""Overage paid from a wallet: what a consume's overage costs in the wallet's unit (rate
and rounding from the plans file), and drawing it from the customer's wallet in the
consume's own transaction, so that the usage and its payment are stored both or neither
(docs/quotas.md, decision 0042)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Context as DecimalContext
from decimal import Decimal, localcontext
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.catalog.quotas import Enforcement, WalletOverage
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.invariants import InvariantViolation, invariant
from billfold.kit.money import MAX_MINOR, round_minor
from billfold.metering.quotas.format import show
from billfold.metering.quotas.lookup import Quota
from billfold.wallets import service as wallets
from billfold.wallets.records import InsufficientBalance

# Usage has at most 30 digits and a rate 24 (`catalog.quotas.MAX_RATE_DIGITS`): their
# product is exact in 60, whatever the thread's decimal context says.
_EXACT: Final = DecimalContext(prec=60)


@dataclass(frozen=True)
class Payment:
    """What a consume's overage cost and what its wallet paid, in minor units of `unit`."""

    unit: str
    rate: Decimal  # minor units per unit of usage
    cost: int  # overage x rate, rounded once
    paid: int  # drawn from the wallet: `cost`, or less when it may pay in part
    balance_after: int  # the wallet's available balance after the draw
    reference: str  # the wallet spend's reference
    transfer_ids: tuple[str, ...]

    @property
    def shortfall(self) -> int:
        return self.cost - self.paid

    def as_json(self) -> dict[str, Any]:
        """The answer's `wallet`, and what a consume stores to answer its retries."""
        return {
            "unit": self.unit,
            "rate": show(self.rate),
            "cost": self.cost,
            "paid": self.paid,
            "shortfall": self.shortfall,
            "balance": self.balance_after,
            "reference": self.reference,
            "transfer_ids": list(self.transfer_ids),
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Payment:
        """A payment as `as_json` wrote it (a replay's answer, decision 0047)."""
        payment = cls(
            str(stored["unit"]),
            Decimal(stored["rate"]),
            int(stored["cost"]),
            int(stored["paid"]),
            int(stored["balance"]),
            str(stored["reference"]),
            tuple(str(each) for each in stored["transfer_ids"]),
        )
        invariant(payment.shortfall == stored["shortfall"], "a stored payment adds up")
        return payment


@dataclass(frozen=True)
class Price:
    """What usage past the quota costs in the wallet's unit: consume pays it, the check
    asks whether the wallet holds it. Both get it from `price`, so they agree."""

    unit: str
    rate: Decimal  # minor units per unit of usage
    cost: int  # overage x rate, rounded once with the feature's rounding


def price(catalog: Catalog, quota: Quota, properties: Mapping[str, Any], overage: Decimal) -> Price:
    """The cost of `overage` of a feature paid from a wallet, for usage with these
    properties (an AI model's `credits` rate applies to the `model` they name)."""
    wallet = _wallet(quota)
    rate = rate_of(catalog, quota, properties)
    return Price(wallet.unit, rate, cost_of(overage, rate, wallet))


def rate_of(catalog: Catalog, quota: Quota, properties: Mapping[str, Any]) -> Decimal:
    """Minor units of the wallet's unit per unit of usage. AI tokens paid in the `ai:`
    section's credit unit use the `credits` rate of the consume's `model`, when the
    table gives that model one; everything else the feature's own `rate`."""
    wallet = _wallet(quota)
    ai = catalog.ai
    if wallet.unit == ai.credit_unit and quota.meter.event_type == ai.event:
        by_model = ai.credit_rate(properties.get("model"))
        if by_model is not None:
            return by_model
    return wallet.rate


def cost_of(overage: Decimal, rate: Decimal, wallet: WalletOverage) -> int:
    """`overage` x `rate`, computed exactly and rounded once with the feature's rounding.
    A cost no BIGINT holds is more than any wallet holds: it is capped there, and so
    refused (or paid in part) like any other cost past the balance."""
    with localcontext(_EXACT):
        exact = overage * rate
    if exact > MAX_MINOR:
        return MAX_MINOR
    return round_minor(exact, rounding=wallet.rounding.mode)


def reference_of(idempotency_key: str) -> str:
    """The wallet spend's reference, from the consume's idempotency key: one spend per
    consume, whatever the key's characters (a spend's reference keeps to a ledger id's)."""
    return "consume:" + hashlib.blake2b(idempotency_key.encode(), digest_size=16).hexdigest()


async def lock_wallets(
    session: AsyncSession, ctx: Context, wanted: Iterable[tuple[str, str]]
) -> None:
    """Lock the (customer, unit) wallets a batch may draw, in one order (sorted), before
    any of its draws: every batch takes them the same way, after its quota accounts and
    before the ledger's rows and the event-log head, and so never waits in a circle.
    SQLite has no row locks (its writers queue on the database lock): nothing to do."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for customer, unit in sorted(set(wanted)):
        await wallets.find_wallet(session, ctx, customer, unit, lock=True)


async def pay(
    session: AsyncSession,
    ctx: Context,
    *,
    catalog: Catalog,
    quota: Quota,
    customer: str,
    idempotency_key: str,
    properties: Mapping[str, Any],
    amount: Decimal,
    overage: Decimal,
    mode: Enforcement,
) -> Payment | InsufficientBalance:
    """Draw the overage's cost from the customer's wallet, in the caller's transaction.

    Under `enforce`, a quota that allows no unpaid overage (`limit: hard`, `overage:
    false`) must be paid in full: short of it, the answer is `InsufficientBalance` and
    nothing is drawn. Otherwise the wallet pays what it holds, possibly nothing, and the
    rest is `shortfall` (the usage stays overage, as without a wallet)."""
    quoted = price(catalog, quota, properties, overage)
    unit, rate, cost = quoted.unit, quoted.rate, quoted.cost
    reference = reference_of(idempotency_key)
    if cost == 0:  # nothing to draw: free overage (rate 0, or rounded to nothing)
        return Payment(unit, rate, 0, 0, 0, reference, ())
    in_full = mode is Enforcement.ENFORCE and quota.policy.pays_in_full
    try:
        async with session.begin_nested():  # a refusal leaves nothing behind
            spent = await wallets.spend(
                session,
                ctx,
                customer_id=customer,
                unit=unit,
                amount=cost,
                reference=reference,
                allow_partial=not in_full,
            )
    except InsufficientBalance as short:
        balance = int(short.extra.get("balance", 0))
        return InsufficientBalance(
            f"{quota.feature.key}: {show(overage)} of {show(amount)} is past the quota and "
            f"costs {cost} {unit}; the wallet holds {balance}",
            extra={
                "feature": quota.feature.key,
                "requested": show(amount),
                "overage": show(overage),
                "unit": unit,
                "rate": show(rate),
                "cost": cost,
                "balance": balance,
                "shortfall": cost - max(balance, 0),
            },
        )
    return Payment(
        unit,
        rate,
        cost,
        spent.amount,
        spent.balance_after,
        reference,
        tuple(spent.transfer_ids),
    )


def paid_entry(
    ctx: Context,
    *,
    customer: str,
    feature_key: str,
    event_id: str,
    overage: Decimal,
    mode: Enforcement,
    payment: Payment,
) -> eventlog.Entry:
    """A `UsagePaidFromWallet` entry: the usage event, its overage, and the wallet spend
    that paid it, with the spend's ledger transfers."""
    data = {
        "customer": customer,
        "feature": feature_key,
        "event_id": event_id,
        "overage": show(overage),
        "enforcement": mode.value,
        **payment.as_json(),
    }
    return eventlog.Entry(ctx, "UsagePaidFromWallet", data)


def _wallet(quota: Quota) -> WalletOverage:
    wallet = quota.policy.wallet
    if wallet is None:
        raise InvariantViolation(f"{quota.feature.key} is not paid from a wallet")
    return wallet
