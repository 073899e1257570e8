"""Opaque, prefixed identifiers such as `grt_4x2k...`.

Ids carry 130 random bits as 26 characters of the lowercase base32 alphabet, so they
are safe in URLs and reveal nothing about volume or time.
"""

from __future__ import annotations

import re
import secrets

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
