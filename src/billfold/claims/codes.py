"""Claim codes a person can type: no ambiguous characters, grouped, with a check character.

    7KQM-X2HD-9TWP-R4CE-NV3B      19 random characters (~93 bits) + 1 check character

The alphabet leaves out 0/O, 1/I/L and U. The last character is a Luhn mod 30 check, so
a typo is told apart from a code that was never issued, without a database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
RANDOM_LENGTH = 19
GROUP = 4
_INDEX = {char: index for index, char in enumerate(ALPHABET)}


def generate() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))
    full = body + _check_character(body)
    return "-".join(full[i : i + GROUP] for i in range(0, len(full), GROUP))


def normalize(typed: str) -> str | None:
    """The canonical form of a typed code, or None if it cannot be one of ours."""
    compact = "".join(typed.split()).replace("-", "").upper()
    if len(compact) != RANDOM_LENGTH + 1 or any(char not in _INDEX for char in compact):
        return None
    if _check_character(compact[:-1]) != compact[-1]:
        return None
    return compact


def keyed_hash(secret_key: bytes, normalized: str) -> str:
    """What is stored: HMAC-SHA256 under a key kept outside the database."""
    return hmac.new(secret_key, normalized.encode("ascii"), hashlib.sha256).hexdigest()


def _check_character(body: str) -> str:
    base = len(ALPHABET)
    factor = 2
    total = 0
    for char in reversed(body):
        addend = factor * _INDEX[char]
        factor = 1 if factor == 2 else 2
        total += addend // base + addend % base
    return ALPHABET[(base - total % base) % base]
