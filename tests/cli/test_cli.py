"""The `billfold` command, run as a real subprocess against a fresh SQLite file.

`billfold init` runs once per module; every test works on its own copy of that database,
so the tests are independent and the module stays quick."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import secrets
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from billfold.app import create_app
from billfold.claims import codes
from billfold.kit.db import Database
from billfold.settings import Settings
from tests.conftest import CSV_HEADER, PLANS, ROOT

BILLFOLD = ROOT / ".venv" / "bin" / "billfold"
SECRET = "cli-test-secret-0123456789abcdefghijklmnop"  # 42 characters
TOKEN = re.compile(r"\bbfk_[A-Za-z0-9_-]{20,}")


@dataclass
class Cli:
    """`billfold` with its environment pointing at one SQLite file."""

    folder: Path
    database: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.database}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
        env["BILLFOLD_DATABASE_URL"] = self.url
        env["BILLFOLD_SECRET_KEY"] = SECRET
        return env

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
            [str(BILLFOLD), *map(str, args)],
            cwd=self.folder,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(self.database)
        try:
            with connection:
                return connection.execute(statement, params).fetchall()
        finally:
            connection.close()

    def api(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        """One request to the HTTP API over the same database, in this process."""

        async def call() -> httpx.Response:
            settings = Settings(database_url=self.url, secret_key=SECRET.encode())
            database = Database(self.url)
            app = create_app(settings, database=database)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://cli") as client:
                    return await client.request(
                        method, path, json=body, headers={"Authorization": f"Bearer {token}"}
                    )
            finally:
                await database.dispose()

        return asyncio.run(call())


@dataclass
class Template:
    cli: Cli
    init: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    folder = tmp_path_factory.mktemp("billfold-cli")
    cli = Cli(folder, folder / "b.db")
    first = cli.run("init", "--plans", PLANS)
    assert first.returncode == 0, first.stderr
    return Template(cli, first)


@pytest.fixture
def cli(template: Template, tmp_path: Path) -> Cli:
    """A copy of the initialised database, for this test alone."""
    copy = Cli(tmp_path, tmp_path / "b.db")
    source = sqlite3.connect(template.cli.database)
    target = sqlite3.connect(copy.database)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy


def admin_token(template: Template) -> str:
    found = TOKEN.findall(template.init.stdout)
    assert len(found) == 1, template.init.stdout
    return found[0]


def plans_text(**replacements: str) -> str:
    text = PLANS.read_text(encoding="utf-8")
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def next_year() -> str:
    return (datetime.now(UTC) + timedelta(days=365)).date().isoformat()


# --- init and keys ---------------------------------------------------------------------


def test_init_prints_an_admin_key_once(template: Template, cli: Cli) -> None:
    first = template.init
    assert "created tenant 'default'" in first.stdout
    assert "shown once" in first.stdout
    token = admin_token(template)
    assert "plans: applied revision 1" in first.stdout

    # The key works, and the database holds only its hash.
    response = cli.api("GET", "/v1/customers/someone/entitlements", token)
    assert response.status_code == 200, response.text
    assert response.json()["entitlements"]["spaces.max"]["value"] == 3
    stored = cli.sql("SELECT * FROM api_keys")
    assert len(stored) == 1
    assert not any(token in str(value) or token[-20:] in str(value) for value in stored[0])

    second = cli.run("init", "--plans", PLANS)
    assert second.returncode == 0, second.stderr
    assert "tenant 'default' exists" in second.stdout
    assert "plans: no changes" in second.stdout
    assert TOKEN.search(second.stdout + second.stderr) is None
    assert cli.sql("SELECT count(*) FROM api_keys") == [(1,)]


def test_keys_create_prints_a_working_token(template: Template, cli: Cli) -> None:
    result = cli.run("keys", "create", "--tenant", "default", "--scope", "service")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    assert TOKEN.fullmatch(token), token
    assert token != admin_token(template)
    assert re.search(r"created service key key_\w+", result.stderr)
    assert cli.sql("SELECT scope FROM api_keys ORDER BY created_at") == [("admin",), ("service",)]

    # A service key reads and checks but does not administer.
    read = cli.api("GET", "/v1/customers/someone/entitlements", token)
    assert read.status_code == 200, read.text
    batch = cli.api(
        "POST",
        "/v1/claims/batches",
        token,
        {"plan": "beta_tester", "count": 1, "duration": "30d"},
    )
    assert batch.status_code == 403, batch.text
    assert batch.json()["code"] == "insufficient_scope"


# --- plans -----------------------------------------------------------------------------


def test_plans_validate_accepts_the_example(template: Template) -> None:
    result = template.cli.run("plans", "validate", PLANS)
    assert result.returncode == 0, result.stderr
    assert "ok (8 features, 4 plans)" in result.stdout


def test_plans_validate_reports_every_error_with_its_path(
    tmp_path: Path, template: Template
) -> None:
    broken = plans_text(
        **{
            "      spaces.max: 50\n": "      spaces.max: lots\n",
            "      share.enabled: false\n": "      share.enabled: maybe\n",
            '      plugins: ["basic_*", "beta_*"]\n': '      plugins: "beta_*"\n',
            '      devmode.enabled: true\n      plugins: ["*"]\n': (
                '      devmode.enabled: true\n      teleport.enabled: true\n      plugins: ["*"]\n'
            ),
            "  plugins:\n    type: pattern\n": (
                "  plugins:\n    type: pattern\n  beta.flag:\n    type: toggle\n"
            ),
        }
    )
    path = write(tmp_path, "broken.yaml", broken)
    result = template.cli.run("plans", "validate", path)
    assert result.returncode != 0
    errors = result.stderr.splitlines()
    expected = [
        "features.beta.flag.type: expected one of boolean, limit, pattern, metered",
        "plans.free.features.share.enabled: expected true or false",
        'plans.beta_tester.features.plugins: expected a list of glob patterns, e.g. ["basic_*"]',
        'plans.pro.features.spaces.max: expected an integer or "unlimited"',
        "plans.studio.features.teleport.enabled: unknown feature (declare it under features)",
    ]
    for line in expected:
        assert line in errors, (line, errors)
    assert f"{path}: {len(expected)} problem(s)" in errors
    assert "ok" not in result.stdout


def test_plans_validate_reports_duplicate_keys(tmp_path: Path, template: Template) -> None:
    """YAML would silently keep the last of two equal keys; a plans file refuses them."""
    text = plans_text(**{"      spaces.max: 20\n": "      spaces.max: 20\n      spaces.max: 25\n"})
    path = write(tmp_path, "duplicate.yaml", text)
    line = text.splitlines().index("      spaces.max: 25") + 1
    result = template.cli.run("plans", "validate", path)
    assert result.returncode != 0
    assert f"line {line}, column 7: duplicate key 'spaces.max'" in result.stderr
    assert "ok" not in result.stdout


def test_plans_diff_shows_the_change_and_apply_stores_it_once(tmp_path: Path, cli: Cli) -> None:
    path = write(
        tmp_path, "plans.yaml", plans_text(**{"      spaces.max: 50\n": "      spaces.max: 60\n"})
    )

    diff = cli.run("plans", "diff", path)
    assert diff.returncode == 0, diff.stderr
    lines = [line.strip() for line in diff.stdout.splitlines()]
    assert lines == ["~ plan pro", "v1 -> v2", "spaces.max: 50 -> 60"]

    applied = cli.run("plans", "apply", path)
    assert applied.returncode == 0, applied.stderr
    assert "~ plan pro" in applied.stdout
    assert "spaces.max: 50 -> 60" in applied.stdout
    assert "applied: catalog revision 2" in applied.stdout

    again = cli.run("plans", "apply", path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "no changes"

    versions = cli.sql(
        "SELECT v.version, v.features FROM plan_versions v JOIN plans p ON p.id = v.plan_id "
        "WHERE p.key = 'pro' ORDER BY v.version"
    )
    assert [(v, json.loads(f)["spaces.max"]) for v, f in versions] == [(1, 50), (2, 60)]
    assert cli.sql("SELECT count(*) FROM plan_versions") == [(5,)]
    assert cli.sql("SELECT revision FROM catalogs") == [(2,)]


def test_init_gives_only_a_new_tenant_its_catalog(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """`make run` runs `init --plans examples/plans.yaml` every time: a second run must not
    archive what was applied since (decision 0029). On SQLite and PostgreSQL alike."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env |= {"BILLFOLD_DATABASE_URL": database_url, "BILLFOLD_SECRET_KEY": SECRET}
    slug = f"init-{secrets.token_hex(4)}"

    def billfold(*args: str | Path) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
            [str(BILLFOLD), *map(str, args), "--tenant", slug],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result

    first = billfold("init", "--plans", PLANS)
    assert "plans: applied revision 1" in first.stdout

    # The operator adds a meter and a feature, and applies them deliberately.
    grown = write(
        tmp_path,
        "grown.yaml",
        plans_text(
            **{
                "meters:\n": "meters:\n  exports:\n    event: export.done\n"
                "    aggregation: count\n",
                "features:\n": "features:\n  export.enabled:\n    type: boolean\n",
            }
        ),
    )
    assert "applied: catalog revision 2" in billfold("plans", "apply", grown).stdout

    again = billfold("init", "--plans", PLANS)
    assert TOKEN.search(again.stdout + again.stderr) is None
    assert "the stored catalog (revision 2) is left as it is" in again.stdout
    shown = [line.strip() for line in again.stdout.splitlines()]
    assert "- feature export.enabled (archived)" in shown
    assert "- meter exports (archived)" in shown
    assert (
        f"plans: to apply the file to the catalog: billfold plans apply {PLANS} --tenant {slug}"
        in again.stdout
    )
    # Nothing was archived: the catalog is still the one applied last.
    assert billfold("plans", "diff", grown).stdout.strip() == "no changes"

    # Once the file is the catalog, init says so.
    assert "applied: catalog revision 3" in billfold("plans", "apply", PLANS).stdout
    assert "plans: no changes" in billfold("init", "--plans", PLANS).stdout


def test_changing_a_feature_type_is_refused(tmp_path: Path, cli: Cli) -> None:
    text = plans_text(
        **{"  rag.enabled:\n    type: boolean\n": "  rag.enabled:\n    type: limit\n"}
    )
    text = text.replace("rag.enabled: false", "rag.enabled: 0").replace(
        "rag.enabled: true", "rag.enabled: 5"
    )
    path = write(tmp_path, "retyped.yaml", text)
    message = "features.rag.enabled.type: cannot change from boolean to limit"
    before = cli.sql("SELECT count(*) FROM plan_versions")

    # `plans validate` refuses what `diff` and `apply` would: it reads the stored catalog.
    validated = cli.run("plans", "validate", path)
    assert validated.returncode == 1, validated.stdout
    assert message in validated.stderr
    assert "refused by the stored catalog of tenant 'default'" in validated.stderr
    offline = cli.run("plans", "validate", "--offline", path)
    assert offline.returncode == 0, offline.stderr  # the file alone is valid

    applied = cli.run("plans", "apply", path)
    assert applied.returncode != 0
    assert message in applied.stderr
    assert "applied" not in applied.stdout
    assert cli.sql("SELECT type FROM features WHERE key = 'rag.enabled'") == [("boolean",)]
    assert cli.sql("SELECT count(*) FROM plan_versions") == before
    assert cli.sql("SELECT revision FROM catalogs") == [(1,)]


# --- claim codes -----------------------------------------------------------------------


def test_claims_create_writes_csv(template: Template, cli: Cli, tmp_path: Path) -> None:
    expires = next_year()
    arguments = [
        "claims",
        "create",
        "--plan",
        "beta_tester",
        "--count",
        "5",
        "--duration",
        "365d",
        "--max-redemptions",
        "1",
        "--expires",
        expires,
        "--source",
        "kickstarter",
        "--campaign",
        "C",
        "--tier",
        "T",
    ]
    result = cli.run(*arguments)
    assert result.returncode == 0, result.stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert header == CSV_HEADER
    assert len(rows) == 5
    records = [dict(zip(header, row, strict=True)) for row in rows]
    # `--expires` names the last day a code may be redeemed: it expires as that day ends.
    last_day_ends = datetime.fromisoformat(expires).replace(tzinfo=UTC) + timedelta(days=1)
    for record in records:
        assert codes.normalize(record["code"]) is not None
        assert record["batch_id"].startswith("clb_")
        assert record["plan"] == "beta_tester"
        assert record["duration"] == "365d"
        assert record["max_redemptions"] == "1"
        assert datetime.fromisoformat(record["expires_at"]) == last_day_ends
        assert (record["source"], record["campaign"], record["tier"]) == ("kickstarter", "C", "T")
    assert len({record["code"] for record in records}) == 5
    assert cli.sql("SELECT count(*) FROM claim_codes") == [(5,)]

    output = tmp_path / "codes.csv"
    to_file = cli.run(*arguments, "--output", output)
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    assert f"wrote 5 codes to {output}" in to_file.stderr
    header, *rows = list(csv.reader(io.StringIO(output.read_text(encoding="utf-8"))))
    assert header == CSV_HEADER
    assert len(rows) == 5
    assert {row[0] for row in rows}.isdisjoint(record["code"] for record in records)

    # The codes are real: the API redeems one into a kickstarter grant.
    redeemed = cli.api(
        "POST",
        "/v1/claims/redeem",
        admin_token(template),
        {"customer": "backer", "code": rows[0][0]},
    )
    assert redeemed.status_code == 200, redeemed.text
    grant = redeemed.json()["grant"]
    assert grant["source"] == "kickstarter"
    assert grant["plan"] == "beta_tester"
    assert (grant["metadata"]["campaign"], grant["metadata"]["tier"]) == ("C", "T")


def test_claims_create_issues_feature_codes_with_metadata(template: Template, cli: Cli) -> None:
    result = cli.run(
        "claims",
        "create",
        "--feature",
        "devmode.enabled",
        "--count",
        "2",
        "--duration",
        "90d",
        "--campaign",
        "KS",
        "--meta",
        "pledge=early-bird",
        "--meta",
        "note=a=b",
    )
    assert result.returncode == 0, result.stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert header == CSV_HEADER
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert len(records) == 2
    for record in records:
        assert (record["plan"], record["feature"], record["value"]) == (
            "",
            "devmode.enabled",
            "true",
        )
        assert json.loads(record["metadata"]) == {
            "campaign": "KS",
            "note": "a=b",
            "pledge": "early-bird",
        }
    redeemed = cli.api(
        "POST",
        "/v1/claims/redeem",
        admin_token(template),
        {"customer": "dev", "code": records[0]["code"]},
    )
    assert redeemed.status_code == 200, redeemed.text
    grant = redeemed.json()["grant"]
    assert (grant["feature"], grant["value"], grant["metadata"]["pledge"]) == (
        "devmode.enabled",
        True,
        "early-bird",
    )

    limit = cli.run(
        "claims", "create", "--feature", "spaces.max", "--value", "unlimited",
        "--count", "1", "--duration", "lifetime",
    )  # fmt: skip
    assert limit.returncode == 0, limit.stderr
    (_header, row) = list(csv.reader(io.StringIO(limit.stdout)))
    assert dict(zip(CSV_HEADER, row, strict=True))["value"] == '"unlimited"'
    missing = cli.run("claims", "create", "--feature", "spaces.max", "--count", "1",
                      "--duration", "30d")  # fmt: skip
    assert missing.returncode == 1
    assert "invalid_input" in missing.stderr
    assert "#/value" in missing.stderr
    bad_meta = cli.run("claims", "create", "--plan", "pro", "--count", "1", "--duration", "30d",
                       "--meta", "novalue")  # fmt: skip
    assert bad_meta.returncode == 1
    assert "expected KEY=VALUE" in bad_meta.stderr


def test_claims_create_issues_wallet_credit_codes(template: Template, cli: Cli) -> None:
    result = cli.run(
        "claims", "create", "--count", "2", "--duration", "lifetime",
        "--credit-unit", "credits", "--credit-amount", "500",
        "--credit-expires-in-days", "30", "--credit-priority", "10",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    header, *rows = list(csv.reader(io.StringIO(result.stdout)))
    assert header == CSV_HEADER
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert len(records) == 2
    assert {record["plan"] + record["feature"] for record in records} == {""}
    assert json.loads(records[0]["wallet_credit"]) == {
        "amount": 500,
        "expires_in_days": 30,
        "priority": 10,
        "unit": "credits",
    }
    redeemed = cli.api(
        "POST",
        "/v1/claims/redeem",
        admin_token(template),
        {"customer": "ada", "code": records[0]["code"]},
    )
    assert redeemed.status_code == 200, redeemed.text
    answer = redeemed.json()
    assert answer["grant"] is None
    lot = answer["wallet_credit"]
    assert (lot["unit"], lot["amount"], lot["priority"]) == ("credits", 500, 10)
    assert lot["expires_at"] is not None
    wallets = cli.api("GET", "/v1/customers/ada/wallets", admin_token(template), None)
    assert wallets.status_code == 200, wallets.text
    assert [(w["unit"], w["available"]) for w in wallets.json()["wallets"]] == [("credits", 500)]

    plain = cli.run("claims", "create", "--plan", "pro", "--count", "1", "--duration", "30d")
    assert plain.returncode == 0, plain.stderr
    (_header, row) = list(csv.reader(io.StringIO(plain.stdout)))
    assert dict(zip(CSV_HEADER, row, strict=True))["wallet_credit"] == ""

    half = cli.run("claims", "create", "--count", "1", "--duration", "lifetime",
                   "--credit-unit", "credits")  # fmt: skip
    assert half.returncode == 1
    assert "needs both --credit-unit and --credit-amount" in half.stderr
    stray = cli.run("claims", "create", "--plan", "pro", "--count", "1", "--duration", "30d",
                    "--credit-priority", "5")  # fmt: skip
    assert stray.returncode == 1
    assert "need --credit-unit and --credit-amount" in stray.stderr
    zero = cli.run("claims", "create", "--count", "1", "--duration", "lifetime",
                   "--credit-unit", "credits", "--credit-amount", "0")  # fmt: skip
    assert zero.returncode == 1
    assert "#/wallet_credit/amount" in zero.stderr


# --- the event log ---------------------------------------------------------------------


def test_the_event_log_refuses_update_and_delete(cli: Cli) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cli.sql("UPDATE event_log SET type = 'Forged' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        cli.sql("DELETE FROM event_log WHERE seq = 1")
    assert cli.sql("SELECT seq, type FROM event_log ORDER BY seq") == [
        (1, "ApiKeyCreated"),
        (2, "CatalogApplied"),
    ]


def add_an_entry(template: Template, cli: Cli) -> None:
    """A third event-log entry (EntitlementGranted), so that seq 2 is in the middle."""
    granted = cli.api(
        "POST",
        "/v1/customers/audited/grants",
        admin_token(template),
        {"feature": "spaces.max", "value": 5},
    )
    assert granted.status_code == 201, granted.text


def test_a_database_never_migrated_gets_a_clear_answer(tmp_path: Path) -> None:
    empty = Cli(tmp_path, tmp_path / "never-migrated.db")
    result = empty.run("audit", "verify")
    assert result.returncode == 2
    assert "holds no Billfold tables: run `billfold init`" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_audit_verify_names_an_edited_entry(template: Template, cli: Cli) -> None:
    add_an_entry(template, cli)
    ok = cli.run("audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "ok: 3 entries, chain intact"

    cli.sql("DROP TRIGGER event_log_no_update")
    cli.sql("UPDATE event_log SET data = json_set(data, '$.revision', 7) WHERE seq = 2")
    broken = cli.run("audit", "verify")
    assert broken.returncode != 0
    assert "BROKEN at entry seq 2" in broken.stdout
    assert "edited" in broken.stdout


def test_audit_verify_names_a_deleted_entry(template: Template, cli: Cli) -> None:
    add_an_entry(template, cli)
    cli.sql("DROP TRIGGER event_log_no_delete")
    cli.sql("DELETE FROM event_log WHERE seq = 2")
    broken = cli.run("audit", "verify")
    assert broken.returncode != 0
    assert "BROKEN at entry seq 2" in broken.stdout
    assert "deleted" in broken.stdout


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_answers_over_http_and_stops_cleanly(template: Template, cli: Cli) -> None:
    """The real server: startup runs the app's lifespan, a large usage batch
    fits under the events body limit, and SIGTERM stops it without an error."""
    import signal
    import time

    port = free_port()
    server = subprocess.Popen(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), "serve", "--port", str(port)],
        cwd=cli.folder,
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    headers = {"Authorization": f"Bearer {admin_token(template)}"}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "the server did not answer within 30 s"
            time.sleep(0.2)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            assert client.get("/v1/ping").json()["scope"] == "admin"
            check = client.post(
                "/v1/entitlements/check",
                json={"customer": "ada", "feature": "spaces.max", "current": 3},
            )
            assert (check.status_code, check.json()["reason"]) == (200, "limit_reached")
            batch = [
                {
                    "idempotency_key": f"serve-{i}",
                    "customer": f"c{i % 50}",
                    "type": "ai.tokens",
                    "properties": {"tokens": 1, "model": "gpt-4o", "note": "x" * 150},
                }
                for i in range(10_000)
            ]
            report = client.post("/v1/events", json=batch)
            assert report.status_code == 200, report.text[:500]
            assert report.json()["accepted"] == 10_000
            missing = client.get("/v1/nowhere")
            assert missing.headers["content-type"].startswith("application/problem+json")
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it was stopped by.
    assert server.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output, output
    assert "Traceback" not in output, output
