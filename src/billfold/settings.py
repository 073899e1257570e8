"""Deployment settings: read once in `main()` from `BILLFOLD_*` environment variables
(`Settings.from_env()`) and passed down. Nothing reads them at import time.

A `Settings(...)` built in code (the tests, a script) takes only what it is given, never
the environment, so that a variable set for the shell cannot change what a test runs.
"""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from billfold.catalog.quotas import Enforcement

Mode = Literal["self-hosted", "platform"]
# json: one JSON object a line; console: lines for people; auto: console on a terminal.
LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
InvoicePrefix = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9-]{0,15}$")]

DEFAULT_DATABASE_URL = "sqlite:///./var/billfold.db"
DEFAULT_SECRET_FILE = "./var/secret.key"  # noqa: S105 (a path, not a secret)
PREFIX = "BILLFOLD_"


class SettingsError(ValueError):
    """The environment describes a deployment Billfold cannot run."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="forbid")
    reads_environment: ClassVar[bool] = False

    database_url: str = DEFAULT_DATABASE_URL
    # Keys the hashes of claim codes. Kept outside the database on purpose: from
    # BILLFOLD_SECRET_KEY, or else the file BILLFOLD_SECRET_FILE (made on first use).
    secret_key: bytes
    mode: Mode = "self-hosted"
    max_body_bytes: Positive = 1_048_576
    claim_attempts_per_customer: Positive = 10
    claim_attempts_per_address: Positive = 30
    claim_attempt_window_s: Positive = 600
    trust_forwarded_for: bool = False
    database_pool_size: Positive = 20
    # Usage events: how old, and how far ahead of the clock, a timestamp may be.
    usage_late_window_s: Positive = 7 * 86_400
    usage_clock_skew_s: Positive = 300
    max_events_body_bytes: Positive = 16 * 1_048_576  # a batch of 10,000 usage events
    # Quota enforcement unless a feature says otherwise; platform mode always enforces.
    enforcement: Enforcement = Enforcement.ADVISORY
    # nats://host:port: usage events go through a NATS JetStream stream to `billfold
    # worker ingest`; empty: the API writes them to the database itself.
    ingest: str = ""
    ingest_stream: str = "BILLFOLD_USAGE"
    # Invoices (docs/invoices.md): a draft waits `invoice_grace_s` after its period for
    # late usage, then is numbered `<prefix>-<year>-000123` and falls due in
    # `invoice_due_days`. `billfold worker billing` closes periods every
    # `billing_interval_s`.
    invoice_grace_s: NonNegative = 3_600
    invoice_prefix: InvoicePrefix = "INV"
    invoice_due_days: NonNegative = 30
    billing_interval_s: Positive = 60
    # An invoice unpaid this long after it fell due suspends its subscription.
    suspend_after_days: NonNegative = 14
    # The seller, the documents' locale and the taxes (docs/invoices.md); empty: the
    # tenant's name as the seller, en_US, and no tax.
    invoicing_file: str = ""
    # Settlement in platform mode (docs/settlement.md): the platform's fee, a percentage
    # of each settled payment (0 <= fee < 100; never applied in self-hosted mode), and how
    # often `billfold worker payouts` runs a payout batch.
    platform_fee_percent: Decimal = Decimal("3.5")
    payout_interval_s: Positive = 86_400
    # Logs go to stderr (docs/operating.md#logs, decision 0027).
    log_format: LogFormat = "auto"
    log_level: LogLevel = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.reads_environment:
            return (init_settings,)  # only what the caller gives
        return (init_settings, EnvSettingsSource(settings_cls, env_prefix=PREFIX))

    @classmethod
    def from_env(cls) -> Settings:
        """The deployment's settings from `BILLFOLD_*`; `SettingsError` names what is wrong."""
        try:
            return _FromEnvironment()  # type: ignore[call-arg]  # the key is read below
        except ValidationError as error:
            raise SettingsError("; ".join(_problem(item) for item in error.errors())) from None

    @field_validator("database_url")
    @classmethod
    def _database(cls, url: str) -> str:
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            raise ValueError(
                "not a database URL: use sqlite:///path/to/billfold.db or "
                "postgresql://user@host:5432/billfold"
            ) from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(
                f"Billfold does not run on {backend!r}: use sqlite:///path/to/billfold.db or "
                "postgresql://user@host:5432/billfold"
            )
        return url

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, level: Any) -> Any:
        return level.upper() if isinstance(level, str) else level

    @field_validator("ingest")
    @classmethod
    def _nats(cls, url: str) -> str:
        if url and not url.startswith(("nats://", "tls://")):
            raise ValueError("must be a nats:// URL or empty")
        return url

    @field_validator("platform_fee_percent", mode="before")
    @classmethod
    def _fee_exact(cls, fee: Any) -> Any:
        return fee if not isinstance(fee, float) else Decimal(repr(fee))

    @field_validator("platform_fee_percent")
    @classmethod
    def _fee(cls, fee: Decimal) -> Decimal:
        if not fee.is_finite() or not Decimal(0) <= fee < Decimal(100):
            raise ValueError("must be a percentage from 0 up to (not including) 100")
        if fee.as_tuple().exponent < -4:  # type: ignore[operator]
            raise ValueError("at most 4 decimal places")
        return fee

    @model_validator(mode="after")
    def _platform_enforces(self) -> Settings:
        if self.mode == "platform" and self.enforcement is not Enforcement.ENFORCE:
            raise ValueError("platform mode always enforces quotas; unset BILLFOLD_ENFORCEMENT")
        return self


class _FromEnvironment(Settings):
    """`Settings` read from the environment, with the secret key from its file."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")
    reads_environment: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, values: Any) -> Any:
        values = dict(values)
        # An empty variable means "the default", as it always has.
        values = {name: value for name, value in values.items() if value != ""}
        if values.get("mode") == "platform" and "enforcement" not in values:
            values["enforcement"] = Enforcement.ENFORCE
        if "secret_key" not in values:
            values["secret_key"] = _secret_from_file(
                Path(os.environ.get(f"{PREFIX}SECRET_FILE") or DEFAULT_SECRET_FILE)
            )
        elif len(values["secret_key"]) < 32:
            raise ValueError("BILLFOLD_SECRET_KEY must be at least 32 characters")
        return values


def _secret_from_file(path: Path) -> bytes:
    """The key kept in `path`, created with 256 random bits on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise ValueError(f"{path} must hold at least 32 characters")
    return key.encode("utf-8")


def _problem(item: Any) -> str:
    """One of pydantic's errors as the variable it is about and what is wrong with it."""
    field = ".".join(str(part) for part in item["loc"])
    name = f"{PREFIX}{field.upper()}"
    message = str(item["msg"]).removeprefix("Value error, ")
    given = item.get("input")
    if field == "database_url" and isinstance(given, str):
        given = _without_password(given)
    if field and not isinstance(given, dict):
        return f"{name}: {message} (given {given!r})"
    return message


def _without_password(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url
