"""What can be said of a request before reading anything: the shape of a transfer, of
a linked batch and of an account."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

from billfold.kit.errors import BillfoldError, FieldError
from billfold.kit.money import CURRENCY, minor_units
from billfold.ledger.records import (
    ACCOUNT_TYPES,
    BALANCE_RULES,
    MAX_AMOUNT,
    MAX_BATCH,
    MAX_TIMEOUT_S,
    AmountNotPositive,
    InvalidAccount,
    InvalidTransfer,
    NewTransfer,
)

# A client's transfer id: letters, digits and `_ . : -`. `~` is kept for the ids the
# ledger makes itself (an expiry is `<pending id>~expired`), so they never collide.
TRANSFER_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,119}$")
ACCOUNT_CODE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}$")
CREDIT_UNIT: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_CODE_LENGTH: Final = 100


def check_linked(requests: Sequence[NewTransfer]) -> None:
    """A linked batch's shape: at most MAX_BATCH transfers, each well formed, no id twice."""
    if len(requests) > MAX_BATCH:
        raise InvalidTransfer(f"a batch holds at most {MAX_BATCH} transfers")
    seen: set[str] = set()
    for index, request in enumerate(requests):
        with naming(index, request):
            check_shape(request)
            if request.id in seen:
                raise InvalidTransfer(f"transfer id {request.id!r} is twice in the batch")
            seen.add(request.id)


def pending_of(request: NewTransfer) -> str | None:
    return request.post_pending_id or request.void_pending_id


def check_shape(request: NewTransfer) -> None:
    """What can be said of a request before reading anything."""
    if not isinstance(request.id, str) or not TRANSFER_ID.match(request.id):
        raise InvalidTransfer(
            "a transfer id is 1 to 120 letters, digits and _ . : - (starting with a letter "
            "or digit)",
            errors=[FieldError("not a transfer id", pointer="#/id")],
        )
    if len(request.code) > MAX_CODE_LENGTH:
        raise InvalidTransfer(f"a transfer's code is at most {MAX_CODE_LENGTH} characters")
    if request.amount is not None:
        if isinstance(request.amount, bool) or not isinstance(request.amount, int):
            raise AmountNotPositive(
                "an amount is a whole number of minor units",
                errors=[FieldError("not an integer", pointer="#/amount")],
            )
        if request.amount <= 0:
            raise AmountNotPositive(
                f"an amount must be positive, not {request.amount}",
                errors=[FieldError("not positive", pointer="#/amount")],
            )
        if request.amount > MAX_AMOUNT:
            raise InvalidTransfer("an amount fits in 63 bits")
    resolutions = [request.post_pending_id, request.void_pending_id]
    if sum(value is not None for value in resolutions) + request.pending > 1:
        raise InvalidTransfer("a transfer is at most one of pending, a post and a void")
    if pending_of(request) is None:
        for field in ("debit_account_id", "credit_account_id", "amount"):
            if getattr(request, field) is None:
                raise InvalidTransfer(
                    f"a transfer needs {field}",
                    errors=[FieldError("required", pointer=f"#/{field}")],
                )
        if request.debit_account_id == request.credit_account_id:
            raise InvalidTransfer("a transfer's debit and credit accounts differ")
    if request.timeout_s is not None:
        if not request.pending:
            raise InvalidTransfer("only a pending transfer has a timeout")
        if not 0 < request.timeout_s <= MAX_TIMEOUT_S:
            raise InvalidTransfer(f"a timeout is 1 to {MAX_TIMEOUT_S} seconds")


def check_account(code: str, type: str, unit: str, rule: str | None) -> None:
    if not ACCOUNT_CODE.match(code):
        raise InvalidAccount(
            "an account code is 1 to 100 letters, digits and _ . : -",
            errors=[FieldError("not an account code", pointer="#/code")],
        )
    if type not in ACCOUNT_TYPES:
        raise InvalidAccount(
            f"an account's type is one of {', '.join(ACCOUNT_TYPES)}",
            errors=[FieldError("unknown type", pointer="#/type")],
        )
    if CURRENCY.match(unit):
        minor_units(unit, pointer="#/unit")
    elif not CREDIT_UNIT.match(unit):
        raise InvalidAccount(
            "an account's unit is an ISO 4217 currency (USD) or a credit unit (credits: "
            "lowercase letters, digits and _)",
            errors=[FieldError("not a unit", pointer="#/unit")],
        )
    if rule is not None and rule not in BALANCE_RULES:
        raise InvalidAccount(
            f"an account's rule is one of {', '.join(BALANCE_RULES)}",
            errors=[FieldError("unknown rule", pointer="#/rule")],
        )


@contextmanager
def naming(index: int, request: NewTransfer) -> Iterator[None]:
    """Re-raise a refusal about a batch's transfer with the transfer named."""
    try:
        yield
    except BillfoldError as error:
        if "transfer_id" in error.extra:
            raise
        raise type(error)(
            f"transfers[{index}] {request.id}: {error.detail}",
            errors=error.errors,
            extra={**error.extra, "index": index, "transfer_id": request.id},
            headers=error.headers,
        ) from error
