"""Base request/response models: unknown fields and silently coerced types are refused."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from billfold.kit.errors import FieldError, InvalidInput

MAX_PAGE_SIZE = 500
# Request bodies are strict, but JSON has no datetime type: instants come as ISO 8601
# strings and must carry a time zone.
Instant = Annotated[
    AwareDatetime, Field(strict=False), AfterValidator(lambda moment: moment.astimezone(UTC))
]
Metadata = Annotated[dict[str, Any], Field(max_length=50)]


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
        return base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput(
            "the cursor is not valid",
            errors=[FieldError("not a cursor we issued", parameter="cursor")],
        ) from None
