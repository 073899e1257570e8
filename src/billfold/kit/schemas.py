"""Base request/response models: unknown fields and silently coerced types are refused,
and so is text that a backend cannot store as sent (`billfold.kit.text`)."""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)
from pydantic_core import PydanticCustomError

from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.text import json_faults, text_fault

MAX_PAGE_SIZE = 500
_ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
# A decimal string is written as JSON writes a number: an optional `-`, digits without
# leading zeros, an optional `.` and digits, an optional exponent; no spaces, `+` or `_`.
# The one rule for every decimal string (consume's amount, metered properties); use
# `fullmatch`.
DECIMAL_STRING = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _iso_8601(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_INSTANT.match(value)):
        return value
    raise PydanticCustomError(
        "instant", "an ISO 8601 date and time with a time zone, such as 2026-06-01T12:00:00Z"
    )


# JSON and query strings have no datetime type: instants come as ISO 8601 strings and
# must carry a time zone (never as Unix seconds). In a body or a query.
Instant = Annotated[
    AwareDatetime,
    Field(strict=False),
    BeforeValidator(_iso_8601),
    AfterValidator(lambda moment: moment.astimezone(UTC)),
]


_QUANTITY = (
    "a number, or a decimal string written as JSON writes a number (no spaces, no + sign, no _)"
)


def _quantity(value: Any) -> Decimal:
    if isinstance(value, Decimal):  # from Python
        return value
    if isinstance(value, str) and DECIMAL_STRING.fullmatch(value):
        return Decimal(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PydanticCustomError("finite_number", "a finite number")
        # JSON numbers arrive as floats: the shortest form that reads back as this one.
        return Decimal(int(value)) if value.is_integer() else Decimal(repr(value))
    raise PydanticCustomError("decimal_string", _QUANTITY)


# A quantity: a JSON number, or a decimal string for exactness beyond a float's digits.
# With constraints, put them before the validator, `Annotated[Decimal, Field(gt=0),
# QUANTITY]`: pydantic's core checks them there; after it (`Annotated[Quantity,
# Field(gt=0)]`) they run in Python, at twice the cost of the whole field.
QUANTITY = BeforeValidator(_quantity)
Quantity = Annotated[Decimal, QUANTITY]


def _storable_text(value: str) -> str:
    fault = text_fault(value)
    if fault is not None:
        raise PydanticCustomError("text", "{reason}", {"reason": fault})
    return value


def printable(text: str) -> str:
    """`text` with what cannot be stored (or sent back) written as `\\uXXXX` escapes."""
    if text_fault(text) is None:
        return text
    return "".join(
        f"\\u{ord(c):04x}" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text
    )


def _storable_json(value: dict[str, Any]) -> dict[str, Any]:
    for path, reason in json_faults(value):
        where = "/".join(printable(str(part)) for part in path)
        raise PydanticCustomError(
            "json_value", "{where}: {reason}", {"where": where, "reason": reason}
        )
    return value


# A string that every backend stores as sent: no NUL, no lone UTF-16 surrogate. Put it
# after a string's length constraints: `Annotated[str, Field(max_length=200), Storable]`.
Storable = AfterValidator(_storable_text)
Text = Annotated[str, Storable]
# Free-form JSON metadata: its keys and strings are `Text`, its numbers finite.
# A JSON object every backend stores as sent; bound its keys where it is used.
StorableJSON = AfterValidator(_storable_json)
Metadata = Annotated[dict[str, Any], Field(max_length=50), StorableJSON]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(
            "the cursor is not valid",
            errors=[FieldError("not a cursor we issued", parameter="cursor")],
        ) from None
    # A cursor we issued holds stored text; one made up may hold what no backend stores.
    if text_fault(decoded) is not None:
        raise InvalidInput(
            "the cursor is not valid",
            errors=[FieldError("not a cursor we issued", parameter="cursor")],
        )
    return decoded
