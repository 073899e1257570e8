"""Opaque, prefixed identifiers such as `grt_4x2k...`.

Ids carry 128 random bits in lowercase base32 so they are safe in URLs and
reveal nothing about volume or time.
"""

from __future__ import annotations

import base64
import re
import secrets

_ID_BODY_LENGTH = 26
ID_PATTERN = re.compile(r"^[a-z]{2,5}_[a-z2-7]{26}$")


def new_id(prefix: str) -> str:
    body = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{body[:_ID_BODY_LENGTH]}"
