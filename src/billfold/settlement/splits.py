"""The arithmetic of settlement, pure: checking a split table, the platform fee, and
splitting what is left by largest remainder (docs/settlement.md, decision 0044).

Shares are `Decimal` percentages with at most 4 decimal places (`62.5`, `33.3334`), kept
exact; a table's shares sum to exactly 100. Internally a share is a whole number of
millionths (`62.5%` is 625,000 of 1,000,000), so every split is integer arithmetic.

The fee is `amount x percent / 100`, rounded once, half to even (`ROUND_HALF_EVEN`):
exact halves go to the even minor unit, so over many settlements neither the platform nor
the payees gain from rounding. What is left after the fee is split by the largest
remainder method: each payee gets the floor of their exact part; the minor units the
floors leave over go, one each, to the payees with the largest fractional remainders,
ties to the earlier payee in the table. The parts sum exactly to what is split: no minor
unit is created or lost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Final, Literal

from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.invariants import invariant
from billfold.kit.money import round_minor

Role = Literal["creator", "investor"]
# A payee's id: the payable account is `payable:{payee}:{CUR}`, so no `:` in it.
PAYEE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,47}$")
SHARE_PLACES: Final = 4  # decimal places of a share's percentage
MILLIONTHS: Final = 1_000_000  # 100% in the units shares are split in
MAX_SHARES: Final = 100  # payees in one split table
FEE_ROUNDING: Final = ROUND_HALF_EVEN


class SplitSharesNot100(InvalidInput):
    code = "split_shares_not_100"
    title = "A split table's shares must sum to exactly 100%"


class SplitShareNotPositive(InvalidInput):
    code = "split_share_not_positive"
    title = "Each share of a split table is a positive percentage"


class SplitShareTooPrecise(InvalidInput):
    code = "split_share_too_precise"
    title = "A share has at most 4 decimal places"


class InvalidPayee(InvalidInput):
    code = "invalid_payee"
    title = "A payee id is 1 to 48 letters, digits and _ . -"


class DuplicatePayee(InvalidInput):
    code = "split_payee_duplicate"
    title = "A payee appears in a split table once"


class SplitCreatorMissing(InvalidInput):
    code = "split_needs_one_creator"
    title = "A split table names exactly one creator"


class SplitTooLarge(InvalidInput):
    code = "split_too_large"
    title = "A split table has at most 100 shares"


@dataclass(frozen=True)
class Share:
    payee: str
    role: Role
    percent: Decimal

    @property
    def millionths(self) -> int:
        return int(self.percent * 10_000)


def check_shares(shares: Sequence[Share]) -> tuple[Share, ...]:
    """The shares of a split table, checked: one creator, payees well formed and once
    each, every share positive with at most 4 decimal places, summing to exactly 100."""
    if len(shares) > MAX_SHARES:
        raise SplitTooLarge(f"a split table has at most {MAX_SHARES} shares, not {len(shares)}")
    seen: set[str] = set()
    for index, share in enumerate(shares):
        at = f"#/shares/{index}"
        if not PAYEE.match(share.payee):
            raise InvalidPayee(
                f"payee {share.payee!r} is not 1 to 48 letters, digits and _ . - (starting "
                "with a letter or digit)",
                errors=[FieldError("not a payee id", pointer=f"{at}/payee")],
            )
        if share.payee in seen:
            raise DuplicatePayee(
                f"payee {share.payee!r} has two shares; give it one",
                errors=[FieldError("named twice", pointer=f"{at}/payee")],
            )
        seen.add(share.payee)
        if not share.percent.is_finite() or share.percent <= 0:
            raise SplitShareNotPositive(
                f"the share of {share.payee!r} is {share.percent}; a share is more than 0",
                errors=[FieldError("not a positive percentage", pointer=f"{at}/percent")],
            )
        if share.percent != share.percent.quantize(Decimal(1).scaleb(-SHARE_PLACES)):
            raise SplitShareTooPrecise(
                f"the share of {share.payee!r} ({share.percent}) has more than "
                f"{SHARE_PLACES} decimal places",
                errors=[FieldError("too many decimal places", pointer=f"{at}/percent")],
            )
    creators = [share for share in shares if share.role == "creator"]
    if len(creators) != 1:
        raise SplitCreatorMissing(
            f"a split table names exactly one creator, not {len(creators)}",
            errors=[FieldError("one share has role creator", pointer="#/shares")],
        )
    total = sum((share.percent for share in shares), Decimal(0))
    if total != 100:
        raise SplitSharesNot100(
            f"the shares sum to {total}%, not 100%",
            errors=[FieldError(f"sum to {total}, not 100", pointer="#/shares")],
            extra={"sum": str(total)},
        )
    return tuple(Share(s.payee, s.role, canonical(s.percent)) for s in shares)


def canonical(percent: Decimal) -> Decimal:
    """`percent` without trailing zeros or an exponent: `62.50` is `62.5`, `1E+2` is `100`."""
    return Decimal(format(percent.normalize(), "f"))


def fee_of(amount_minor: int, percent: Decimal) -> int:
    """The platform's fee on `amount_minor`: `amount x percent / 100`, rounded once,
    half to even. Exact at any size: the product is taken with enough digits."""
    invariant(amount_minor >= 0, "a fee is taken on a non-negative amount")
    invariant(Decimal(0) <= percent < Decimal(100), "a fee is 0 to under 100 percent")
    with localcontext() as context:
        context.prec = 80  # 19 digits of amount and a percent's digits: exact
        exact = Decimal(amount_minor) * percent / Decimal(100)
    fee = round_minor(exact, rounding=FEE_ROUNDING)
    invariant(0 <= fee <= amount_minor, "a fee is part of the amount")
    return fee


def largest_remainder(amount_minor: int, millionths: Sequence[int]) -> list[int]:
    """`amount_minor` split in proportion to `millionths` (which sum to 1,000,000): the
    floor of each exact part, and the units left over one each to the largest
    fractional remainders, ties to the earlier part. The parts sum to `amount_minor`."""
    invariant(amount_minor >= 0, "a split is of a non-negative amount")
    invariant(sum(millionths) == MILLIONTHS, "the shares of a split sum to 100%")
    invariant(all(m > 0 for m in millionths), "every share of a split is positive")
    floors: list[int] = []
    remainders: list[int] = []
    for share in millionths:
        whole, remainder = divmod(amount_minor * share, MILLIONTHS)
        floors.append(whole)
        remainders.append(remainder)
    left = amount_minor - sum(floors)
    invariant(0 <= left < len(millionths), "floors leave fewer units than there are parts")
    # Largest remainder first; among equals, the earlier part (sorted() is stable).
    order = sorted(range(len(millionths)), key=lambda index: -remainders[index])
    for index in order[:left]:
        floors[index] += 1
    invariant(sum(floors) == amount_minor, "a split neither creates nor loses a minor unit")
    return floors
