"""The `ai:` section of a plans file: the event type AI usage is reported as, and each
model's price per million prompt and completion tokens, in minor units of a currency.

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


@dataclass(frozen=True)
class Price:
    prompt: Decimal  # minor units of the currency per million prompt tokens
    completion: Decimal  # ... per million completion tokens


@dataclass(frozen=True)
class AiSettings:
    """The `ai:` section of the plans file."""

    event: str = "ai.tokens"
    currency: str = "USD"
    models: Mapping[str, Price] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "currency": self.currency,
            "models": {
                name: {"prompt": str(price.prompt), "completion": str(price.completion)}
                for name, price in sorted(self.models.items())
            },
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AiSettings:
        return cls(
            event=raw.get("event", "ai.tokens"),
            currency=raw.get("currency", "USD"),
            models={
                name: Price(Decimal(p["prompt"]), Decimal(p["completion"]))
                for name, p in (raw.get("models") or {}).items()
            },
        )

    def estimate(self, model: str, prompt: Decimal, completion: Decimal) -> Decimal | None:
        """The exact estimated cost in minor units, or None when the model has no price."""
        price = self.models.get(model)
        if price is None:
            return None
        return (prompt * price.prompt + completion * price.completion) / PER
