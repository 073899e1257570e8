"""The `ai:` section of a plans file: the event type AI usage is reported as, each
model's price per million prompt and completion tokens, in minor units of a currency, and
optionally its rate in the credit unit a wallet pays AI usage in (credits per token).

How summaries become usage events, and usage becomes a cost report, is
`billfold.metering.ai`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,99}$")
PER: Final = Decimal(1_000_000)  # prices are per million tokens
CREDIT_UNIT: Final = "credits"  # the default unit of the models' `credits` rates


@dataclass(frozen=True)
class Price:
    prompt: Decimal  # minor units of the currency per million prompt tokens
    completion: Decimal  # ... per million completion tokens
    credits: Decimal | None = None  # minor units of `AiSettings.credit_unit` per token


@dataclass(frozen=True)
class AiSettings:
    """The `ai:` section of the plans file."""

    event: str = "ai.tokens"
    currency: str = "USD"
    models: Mapping[str, Price] = field(default_factory=dict)
    credit_unit: str = CREDIT_UNIT  # the unit of the models' `credits` rates

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": self.event,
            "currency": self.currency,
            "models": {name: _price_json(price) for name, price in sorted(self.models.items())},
        }
        if self.credit_unit != CREDIT_UNIT:  # absent when default: stored catalogs match
            body["credit_unit"] = self.credit_unit
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AiSettings:
        return cls(
            event=raw.get("event", "ai.tokens"),
            currency=raw.get("currency", "USD"),
            models={
                name: Price(
                    Decimal(p["prompt"]),
                    Decimal(p["completion"]),
                    Decimal(p["credits"]) if p.get("credits") is not None else None,
                )
                for name, p in (raw.get("models") or {}).items()
            },
            credit_unit=raw.get("credit_unit", CREDIT_UNIT),
        )

    def credit_rate(self, model: object) -> Decimal | None:
        """Minor units of `credit_unit` per token of `model`, when the table gives one."""
        price = self.models.get(model) if isinstance(model, str) else None
        return None if price is None else price.credits

    def estimate(self, model: str, prompt: Decimal, completion: Decimal) -> Decimal | None:
        """The exact estimated cost in minor units, or None when the model has no price."""
        price = self.models.get(model)
        if price is None:
            return None
        return (prompt * price.prompt + completion * price.completion) / PER


def _price_json(price: Price) -> dict[str, str]:
    body = {"prompt": str(price.prompt), "completion": str(price.completion)}
    if price.credits is not None:
        body["credits"] = str(price.credits)
    return body
