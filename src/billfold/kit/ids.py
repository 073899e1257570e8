"""Opaque, prefixed identifiers such as `grt_4x2k...`.

Ids carry 130 random bits as 26 characters of the lowercase base32 alphabet, so they
are safe in URLs and reveal nothing about volume or time. Usage events, appended by the
million, take `new_sorted_ids` instead: the instant first, so that their primary key
index grows at one edge (docs/decisions/0019).
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime

_ID_BODY_LENGTH = 26
ID_PATTERN = re.compile(r"^[a-z]{2,5}_[a-z2-7]{26}$")
# Each random byte becomes one character: its low five bits pick one of 32 letters. 256
# is a multiple of 32, so every character is uniform and carries 5 bits. bytes.translate
# does this in C, about ten times faster than base64.b32encode, which loops in Python.
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_TO_LETTER = bytes(_ALPHABET[byte % 32] for byte in range(256))


def new_id(prefix: str) -> str:
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids at once (one read of the random source), for batches."""
    text = secrets.token_bytes(_ID_BODY_LENGTH * count).translate(_TO_LETTER).decode("ascii")
    head = f"{prefix}_"
    return [head + text[i : i + _ID_BODY_LENGTH] for i in range(0, len(text), _ID_BODY_LENGTH)]


# The same 32 characters in ASCII order, so that text order is numeric order.
_SORTED_ALPHABET = b"234567abcdefghijklmnopqrstuvwxyz"
_TO_SORTED = bytes(_SORTED_ALPHABET[byte % 32] for byte in range(256))
_TIME_LENGTH = 10  # 50 bits of milliseconds since 1970: enough until the year 37,000


def new_sorted_ids(prefix: str, count: int, at: datetime) -> list[str]:
    """`count` ids that sort by `at`, to the millisecond, then at random (80 bits).

    They reveal the instant, so use them only for rows that carry it anyway."""
    millis = int(at.timestamp() * 1000)
    stamp = bytes(
        _SORTED_ALPHABET[(millis >> (5 * place)) & 31] for place in reversed(range(_TIME_LENGTH))
    ).decode("ascii")
    size = _ID_BODY_LENGTH - _TIME_LENGTH
    text = secrets.token_bytes(size * count).translate(_TO_SORTED).decode("ascii")
    head = f"{prefix}_{stamp}"
    return [head + text[i : i + size] for i in range(0, len(text), size)]
