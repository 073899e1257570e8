"""The AI runtime's chat.usage_summary: usage events, quotas, tokens and cost."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.conftest import ROOT, Harness, assert_problem

pytestmark = pytest.mark.anyio

SUMMARY = "/v1/integrations/ai/usage-summary"


def documented_example() -> dict[str, Any]:
    """The payload docs/ai-usage.md tells runtimes to copy."""
    text = (ROOT / "docs" / "ai-usage.md").read_text()
    found = re.search(r"```json\n(.*?)\n```", text, re.DOTALL)
    assert found is not None
    return dict(json.loads(found.group(1)))


def summary(
    chat: str, sequence: int, workflow: str, *models: tuple[str, int, int]
) -> dict[str, Any]:
    return {
        "customer": "ada",
        "chat_id": chat,
        "workflow_id": workflow,
        "sequence": sequence,
        "models": [
            {"model": m, "prompt_tokens": p, "completion_tokens": c, "duration_ms": 1000}
            for m, p, c in models
        ],
    }


async def test_the_documented_example_is_accepted_once(harness: Harness) -> None:
    example = documented_example()
    example["timestamp"] = harness.clock.now().isoformat()
    first = await harness.post(SUMMARY, example)
    assert first.status_code == 200, first.text
    assert (first.json()["accepted"], first.json()["results"][0]["idempotency_key"]) == (
        1,
        "ai:chat-42:7:gpt-4o",
    )
    again = await harness.post(SUMMARY, example)
    assert again.json()["duplicates"] == 1
    tokens = await harness.get("/v1/customers/ada/entitlements")
    assert tokens.json()["entitlements"]["ai.tokens"]["usage"]["used"] == "1200"


async def test_tokens_and_cost_per_workflow_and_model(harness: Harness) -> None:
    await harness.post(SUMMARY, summary("c1", 0, "research", ("gpt-4o", 900, 300)))
    await harness.post(SUMMARY, summary("c1", 1, "research", ("gpt-4o", 1000, 0), ("o3", 0, 2500)))
    await harness.post(SUMMARY, summary("c2", 0, "support", ("mystery-model", 10, 5)))
    # Tokens reported as plain usage, without the prompt/completion split: not priced.
    plain = {"idempotency_key": "p1", "customer": "ada", "type": "ai.tokens"}
    await harness.post("/v1/events", [{**plain, "properties": {"tokens": 40, "model": "o3"}}])
    report = (await harness.get("/v1/customers/ada/usage/ai")).json()
    assert report["currency"] == "USD"
    models = {m["model"]: m for m in report["models"]}
    # gpt-4o: 1,900 prompt x 250 + 300 completion x 1000 = 775,000 / 1M = 0.775 cents -> 1
    assert (models["gpt-4o"]["tokens"], models["gpt-4o"]["estimated_cost_minor"]) == (2200, 1)
    # o3: 2,500 completion x 800 = 2,000,000 / 1M = 2 cents
    assert models["o3"]["estimated_cost_minor"] == 2
    assert models["o3"]["unpriced_tokens"] == 40
    assert models["mystery-model"]["unpriced_tokens"] == 15
    workflows = {w["workflow"]: w for w in report["workflows"]}
    assert (workflows["research"]["calls"], workflows["research"]["tokens"]) == (3, 4700)
    assert workflows["support"]["tokens"] == 15
    # The total is rounded once from the exact sum: 0.775 + 2 = 2.775 cents -> 3.
    assert (report["total"]["tokens"], report["total"]["estimated_cost_minor"]) == (4755, 3)


async def test_a_wrong_total_or_a_repeated_model_is_refused(harness: Harness) -> None:
    wrong = summary("c1", 0, "w", ("gpt-4o", 10, 10))
    wrong["models"][0]["total_tokens"] = 25
    body = assert_problem(await harness.post(SUMMARY, wrong), 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/models/0/total_tokens"
    twice = summary("c1", 0, "w", ("gpt-4o", 1, 1), ("gpt-4o", 2, 2))
    assert_problem(await harness.post(SUMMARY, twice), 422, "invalid_input")
    colon = summary("a:b", 0, "w", ("gpt-4o", 1, 1))
    assert_problem(await harness.post(SUMMARY, colon), 422, "invalid_input")
