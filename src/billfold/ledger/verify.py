"""`verify`: recompute every account's balances from the transfers and check the
ledger's invariants; each disagreement is a named `Violation` (docs/ledger.md)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.ledger import repository
from billfold.ledger.records import Account

ViolationKind = Literal["balance_differs", "unit_unbalanced", "rule_broken", "units_differ"]
BALANCE_NAMES: Final = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


@dataclass(frozen=True)
class Violation:
    """One disagreement. `balance_differs`: an account's stored balance is not what its
    transfers add up to. `unit_unbalanced`: a unit's debits and credits differ (stored
    balances; `account_*` are None). `rule_broken`: an account's stored balances break its
    rule. `units_differ`: a transfer (`transfer_id`) between accounts of other units."""

    kind: ViolationKind
    tenant_id: str | None
    account_id: str | None
    account_code: str | None
    balance: str | None
    stored: int | None
    recomputed: int | None
    unit: str | None = None
    transfer_id: str | None = None

    def describe(self) -> str:
        if self.kind == "balance_differs":
            return (
                f"account {self.account_id} ({self.account_code}): {self.balance} is "
                f"{self.stored}, its transfers add up to {self.recomputed}"
            )
        if self.kind == "unit_unbalanced":
            return (
                f"unit {self.unit} (tenant {self.tenant_id}): {self.balance} debits "
                f"{self.stored} != credits {self.recomputed}"
            )
        if self.kind == "rule_broken":
            return (
                f"account {self.account_id} ({self.account_code}): {self.balance} "
                f"(debits {self.stored}, credits {self.recomputed})"
            )
        return f"transfer {self.transfer_id} (tenant {self.tenant_id}): {self.balance}"


@dataclass(frozen=True)
class Verification:
    accounts: int
    transfers: int
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def describe(self) -> str:
        if self.ok:
            return f"ok: {self.accounts} accounts, {self.transfers} transfers"
        return "\n".join(violation.describe() for violation in self.violations)


async def verify(session: AsyncSession, tenant_id: str | None = None) -> Verification:
    """Recompute one tenant's ledger (every tenant's with None) from its transfers:
    each account's four balances, each unit's debits against its credits (per tenant),
    each account's rule, and each transfer's unit. Reads only; run it in a transaction
    of its own so that it sees one moment (`billfold ledger verify`)."""
    accounts = [Account.of(row) for row in await repository.accounts(session, tenant_id)]
    transfers = await repository.count_transfers(session, tenant_id)
    recomputed = await repository.recomputed_balances(session, tenant_id)
    violations: list[Violation] = []
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for account in accounts:
        stored = (
            account.debits_posted,
            account.credits_posted,
            account.debits_pending,
            account.credits_pending,
        )
        expected = recomputed.get(account.id, (0, 0, 0, 0))
        for name, have, want in zip(BALANCE_NAMES, stored, expected, strict=True):
            if have != want:
                violations.append(
                    Violation(
                        "balance_differs",
                        account.tenant_id,
                        account.id,
                        account.code,
                        name,
                        have,
                        want,
                        account.unit,
                    )
                )
        total = totals[(account.tenant_id, account.unit)]
        for place, value in enumerate(stored):
            total[place] += value
        if account.balances.breaks(account.rule):
            debits, credits = (
                (account.debits_posted + account.debits_pending, account.credits_posted)
                if account.rule == "debits_must_not_exceed_credits"
                else (account.debits_posted, account.credits_posted + account.credits_pending)
            )
            violations.append(
                Violation(
                    "rule_broken",
                    account.tenant_id,
                    account.id,
                    account.code,
                    str(account.rule),
                    debits,
                    credits,
                    account.unit,
                )
            )
    for (tenant, unit), (dp, cp, dn, cn) in sorted(totals.items()):
        for name, debits, credits in (("posted", dp, cp), ("pending", dn, cn)):
            if debits != credits:
                violations.append(
                    Violation("unit_unbalanced", tenant, None, None, name, debits, credits, unit)
                )
    for row in await repository.transfers_across_units(session, tenant_id):
        violations.append(
            Violation(
                "units_differ",
                row[0],
                None,
                None,
                f"unit {row[2]} between accounts in {row[3]} and {row[4]}",
                None,
                None,
                row[2],
                row[1],
            )
        )
    return Verification(len(accounts), transfers, violations)
