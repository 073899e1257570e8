"""Deployment settings, built once in `main()` from the environment and passed down."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from billfold.catalog.quotas import Enforcement

Mode = Literal["self-hosted", "platform"]

DEFAULT_DATABASE_URL = "sqlite:///./var/billfold.db"
DEFAULT_SECRET_FILE = "./var/secret.key"  # noqa: S105 (a path, not a secret)


class SettingsError(ValueError):
    """The environment describes a deployment Billfold cannot run."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    secret_key: bytes
    mode: Mode = "self-hosted"
    max_body_bytes: int = 1_048_576
    claim_attempts_per_customer: int = 10
    claim_attempts_per_address: int = 30
    claim_attempt_window_s: int = 600
    trust_forwarded_for: bool = False
    database_pool_size: int = 20
    # Usage events: how old, and how far ahead of the clock, a timestamp may be.
    usage_late_window_s: int = 7 * 86_400
    usage_clock_skew_s: int = 300
    max_events_body_bytes: int = 16 * 1_048_576  # a batch of 10,000 usage events
    # Quota enforcement unless a feature says otherwise; platform mode always enforces.
    enforcement: Enforcement = Enforcement.ADVISORY
    # nats://host:port: usage events go through a NATS JetStream stream to `billfold
    # worker ingest`; empty: the API writes them to the database itself.
    ingest_url: str = ""
    ingest_stream: str = "BILLFOLD_USAGE"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        mode = env.get("BILLFOLD_MODE", "self-hosted")
        if mode not in ("self-hosted", "platform"):
            raise SettingsError(f"BILLFOLD_MODE must be self-hosted or platform, not {mode!r}")
        return cls(
            database_url=env.get("BILLFOLD_DATABASE_URL", DEFAULT_DATABASE_URL),
            secret_key=_secret_key(env),
            mode=mode,  # type: ignore[arg-type]
            max_body_bytes=_int(env, "BILLFOLD_MAX_BODY_BYTES", 1_048_576),
            claim_attempts_per_customer=_int(env, "BILLFOLD_CLAIM_ATTEMPTS_PER_CUSTOMER", 10),
            claim_attempts_per_address=_int(env, "BILLFOLD_CLAIM_ATTEMPTS_PER_ADDRESS", 30),
            claim_attempt_window_s=_int(env, "BILLFOLD_CLAIM_ATTEMPT_WINDOW_S", 600),
            trust_forwarded_for=env.get("BILLFOLD_TRUST_FORWARDED_FOR", "") in ("1", "true"),
            database_pool_size=_int(env, "BILLFOLD_DATABASE_POOL_SIZE", 20),
            usage_late_window_s=_int(env, "BILLFOLD_USAGE_LATE_WINDOW_S", 7 * 86_400),
            usage_clock_skew_s=_int(env, "BILLFOLD_USAGE_CLOCK_SKEW_S", 300),
            max_events_body_bytes=_int(env, "BILLFOLD_MAX_EVENTS_BODY_BYTES", 16 * 1_048_576),
            enforcement=_enforcement(env, mode),
            ingest_url=_ingest_url(env),
            ingest_stream=env.get("BILLFOLD_INGEST_STREAM", "BILLFOLD_USAGE"),
        )


def _ingest_url(env: Mapping[str, str]) -> str:
    raw = env.get("BILLFOLD_INGEST", "")
    if raw and not raw.startswith(("nats://", "tls://")):
        raise SettingsError(f"BILLFOLD_INGEST must be a nats:// URL or empty, not {raw!r}")
    return raw


def _enforcement(env: Mapping[str, str], mode: str) -> Enforcement:
    raw = env.get("BILLFOLD_ENFORCEMENT", "")
    if mode == "platform":
        if raw not in ("", Enforcement.ENFORCE):
            raise SettingsError("platform mode always enforces quotas; unset BILLFOLD_ENFORCEMENT")
        return Enforcement.ENFORCE
    if raw == "":
        return Enforcement.ADVISORY
    if raw not in {e.value for e in Enforcement}:
        raise SettingsError(f"BILLFOLD_ENFORCEMENT must be off, advisory or enforce, not {raw!r}")
    return Enforcement(raw)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, not {value}")
    return value


def _secret_key(env: Mapping[str, str]) -> bytes:
    """The key for keyed hashes of claim codes. Kept outside the database on purpose.

    `BILLFOLD_SECRET_KEY` wins; otherwise the key lives in `BILLFOLD_SECRET_FILE`
    (default `./var/secret.key`), created with 256 random bits on first use.
    """
    raw = env.get("BILLFOLD_SECRET_KEY")
    if raw:
        if len(raw) < 32:
            raise SettingsError("BILLFOLD_SECRET_KEY must be at least 32 characters")
        return raw.encode("utf-8")
    path = Path(env.get("BILLFOLD_SECRET_FILE", DEFAULT_SECRET_FILE))
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise SettingsError(f"{path} must hold at least 32 characters")
    return key.encode("utf-8")
