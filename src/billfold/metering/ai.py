"""The AI runtime's usage pipeline: `chat.usage_summary` payloads in, usage events out,
and tokens with an estimated cost per workflow and per model. Pure, no I/O.

One summary names a chat, its workflow and a sequence number, and the tokens each model
used. Each model line becomes one usage event, keyed `ai:<chat>:<sequence>:<model>`, so a
summary sent twice counts once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from billfold.catalog.ai import AiSettings
from billfold.customers.service import check_external_id
from billfold.kit.errors import FieldError, InvalidInput

SERVICE: Final = "ai-runtime"


@dataclass
class Line:
    """Tokens and cost of one workflow, one model, or everything."""

    calls: int = 0
    prompt_tokens: Decimal = Decimal(0)
    completion_tokens: Decimal = Decimal(0)
    tokens: Decimal = Decimal(0)
    duration_ms: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # exact, minor units, of the priced calls
    unpriced_tokens: Decimal = Decimal(0)

    def add(self, row: Mapping[str, Any], cost: Decimal | None) -> None:
        self.calls += 1
        prompt = _number(row.get("prompt_tokens"))
        completion = _number(row.get("completion_tokens"))
        total = _number(row.get("tokens"))
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.tokens += total
        self.duration_ms += _number(row.get("duration_ms"))
        if cost is None:
            self.unpriced_tokens += total
        else:
            self.cost += cost


def _number(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(0)


@dataclass(frozen=True)
class AiReport:
    by_workflow: dict[str, Line]
    by_model: dict[str, Line]
    total: Line


def report(settings: AiSettings, rows: Iterable[tuple[datetime, Mapping[str, Any]]]) -> AiReport:
    by_workflow: dict[str, Line] = {}
    by_model: dict[str, Line] = {}
    total = Line()
    for _occurred_at, row in rows:
        model = str(row.get("model") or "unknown")
        workflow = str(row.get("workflow") or "unknown")
        split = row.get("prompt_tokens") is not None or row.get("completion_tokens") is not None
        cost = (
            settings.estimate(
                model, _number(row.get("prompt_tokens")), _number(row.get("completion_tokens"))
            )
            if split
            else None  # tokens reported without the prompt/completion split cannot be priced
        )
        for lines, key in ((by_workflow, workflow), (by_model, model)):
            lines.setdefault(key, Line()).add(row, cost)
        total.add(row, cost)
    return AiReport(by_workflow, by_model, total)


def _refused(pointer: str, message: str) -> InvalidInput:
    return InvalidInput(message, errors=[FieldError(message, pointer=pointer)])


def events_of(summary: Mapping[str, Any], settings: AiSettings) -> list[dict[str, Any]]:
    """The usage events of one validated summary (see the API schema), one per model;
    `InvalidInput` names the field that cannot become one."""
    check_external_id(summary["customer"], pointer="#/customer")
    chat, sequence = summary["chat_id"], summary["sequence"]
    events = []
    seen: set[str] = set()
    for index, usage in enumerate(summary["models"]):
        model = usage["model"]
        if model in seen:
            raise _refused(f"#/models/{index}/model", f"model {model!r} is listed twice")
        seen.add(model)
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        total = usage.get("total_tokens")
        if total is None:
            total = prompt + completion
        elif total != prompt + completion:
            raise _refused(
                f"#/models/{index}/total_tokens",
                f"total_tokens {total} is not prompt_tokens + completion_tokens "
                f"({prompt + completion})",
            )
        properties: dict[str, Any] = {
            "tokens": total,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "model": model,
            "workflow": summary["workflow_id"],
            "chat_id": chat,
            "sequence": sequence,
        }
        if usage.get("duration_ms") is not None:
            properties["duration_ms"] = usage["duration_ms"]
        events.append(
            {
                "idempotency_key": f"ai:{chat}:{sequence}:{model}",
                "customer": summary["customer"],
                "type": settings.event,
                "service": SERVICE,
                "correlation_id": summary.get("correlation_id") or chat,
                "timestamp": summary.get("timestamp"),
                "properties": properties,
            }
        )
    return events
