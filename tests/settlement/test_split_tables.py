"""Split tables per app through the API: versioned like plans, each change a new
version, refused with a stable code when the shares do not add up."""

from __future__ import annotations

import pytest

from tests.conftest import Harness, assert_problem
from tests.settlement.helpers import put_split, settle

pytestmark = pytest.mark.anyio


async def test_each_change_is_a_new_version_and_settlements_record_theirs(
    platform: Harness,
) -> None:
    first = await put_split(platform, "chess")
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    assert first.json()["shares"] == [
        {"payee": "ada", "role": "creator", "percent": "50"},
        {"payee": "ivy", "role": "investor", "percent": "30"},
        {"payee": "ole", "role": "investor", "percent": "20"},
    ]
    # the same table again changes nothing (50.00 is 50)
    same = await put_split(
        platform,
        "chess",
        [("ada", "creator", "50.00"), ("ivy", "investor", "30"), ("ole", "investor", "20")],
    )
    assert same.json() == first.json()
    paid_v1 = (await settle(platform, "p1", "public_app_purchase", 1000, app_id="chess")).json()
    second = await put_split(
        platform, "chess", [("ada", "creator", "62.5"), ("ivy", "investor", "37.5")]
    )
    assert second.json()["version"] == 2
    paid_v2 = (await settle(platform, "p2", "public_app_purchase", 1000, app_id="chess")).json()
    assert (paid_v1["split_version"], paid_v2["split_version"]) == (1, 2)
    assert [p["amount"] for p in paid_v2["parts"]] == [35, 603, 362]  # 965 by 62.5/37.5
    current = (await platform.get("/v1/apps/chess/splits")).json()
    assert current == second.json()
    history = (await platform.get("/v1/apps/chess/splits/versions")).json()
    assert [v["version"] for v in history["versions"]] == [2, 1]
    assert history["next_before"] is None
    page = (await platform.get("/v1/apps/chess/splits/versions", params={"limit": 1})).json()
    assert ([v["version"] for v in page["versions"]], page["next_before"]) == ([2], 2)
    older = await platform.get("/v1/apps/chess/splits/versions", params={"before": 2})
    assert [v["version"] for v in older.json()["versions"]] == [1]
    events = (await platform.get("/v1/audit/events", params={"type": "SplitTableChanged"})).json()
    assert [e["data"]["version"] for e in events["events"]] == [1, 2]


async def test_bad_split_tables_are_refused_with_stable_codes(harness: Harness) -> None:
    cases = [
        ([("ada", "creator", "60"), ("ivy", "investor", "30")], "split_shares_not_100"),
        ([("ada", "creator", "60"), ("ivy", "investor", "40.0001")], "split_shares_not_100"),
        ([("ada", "creator", "110"), ("ivy", "investor", "-10")], "split_share_not_positive"),
        ([("ada", "creator", "100"), ("ivy", "investor", "0")], "split_share_not_positive"),
        (
            [("ada", "creator", "99.99999"), ("ivy", "investor", "0.00001")],
            "split_share_too_precise",
        ),
        ([("ada@x", "creator", "100")], "invalid_payee"),
        ([("ada", "creator", "50"), ("ada", "investor", "50")], "split_payee_duplicate"),
        ([("ivy", "investor", "100")], "split_needs_one_creator"),
        ([], "split_needs_one_creator"),
    ]
    for shares, code in cases:
        body = assert_problem(await put_split(harness, "chess", shares), 422, code)
        assert body["errors"], body
    assert_problem(await put_split(harness, "chess:x"), 422, "invalid_input")
    assert_problem(await harness.get("/v1/apps/chess%00/splits"), 422, "invalid_input")
    assert_problem(await harness.get("/v1/apps/chess/splits"), 404, "split_table_not_found")
    assert_problem(
        await harness.get("/v1/apps/chess/splits/versions"), 404, "split_table_not_found"
    )
    bad_role = {"shares": [{"payee": "ada", "role": "owner", "percent": "100"}]}
    response = await harness.client.put(
        "/v1/apps/chess/splits", json=bad_role, headers=harness.admin
    )
    assert_problem(response, 422, "invalid_input")
