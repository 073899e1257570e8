"""A command that cannot run where it is (bad settings; a database that is missing,
unreachable, of a kind Billfold does not run on, or never migrated) says so in one line
on stderr, with what to do, and exits 2. No traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from billfold.kit.migrate import head, upgrade
from tests.conftest import ROOT

BILLFOLD = ROOT / ".venv" / "bin" / "billfold"
SECRET = "cli-test-secret-0123456789abcdefghijklmnop"


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env["BILLFOLD_SECRET_KEY"] = SECRET
    env.update({f"BILLFOLD_{name.upper()}": value for name, value in variables.items()})
    return env


def billfold(cwd: Path, *args: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (our own console script, fixed arguments)
        [str(BILLFOLD), *args],
        cwd=cwd,
        env=environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's only line, once it is checked to be one line on stderr, exit 2."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command", [("tenants", "list"), ("migrate",), ("keys", "list"), ("serve", "--port", "1")]
)
def test_an_unreachable_postgresql_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"postgresql://billfold:hunter2@127.0.0.1:{closed_port()}/billfold"
    line = one_line_error(billfold(tmp_path, *command, database_url=url))
    assert "cannot reach the database at postgresql://billfold:***@127.0.0.1" in line
    assert "is PostgreSQL running there" in line
    assert "hunter2" not in line


@pytest.mark.parametrize("command", [("tenants", "list"), ("audit", "verify"), ("serve",)])
def test_a_database_never_migrated_says_to_run_init_or_migrate(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path / 'not-yet' / 'billfold.db'}"  # its folder is missing too
    line = one_line_error(billfold(tmp_path, *command, database_url=url))
    assert "holds no Billfold tables: run `billfold init`" in line
    assert "`billfold migrate`" in line


@pytest.mark.parametrize("command", [("tenants", "list"), ("migrate",), ("init",)])
def test_a_sqlite_file_that_cannot_be_made_is_one_line(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'a-file' / 'billfold.db'}"
    line = one_line_error(billfold(tmp_path, *command, database_url=url))
    assert "cannot open the SQLite database" in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root@localhost/billfold", "Billfold does not run on 'mysql'"),
        ("not a url", "not a database URL"),
    ],
)
@pytest.mark.parametrize("command", [("tenants", "list"), ("migrate",), ("serve",)])
def test_an_unsupported_database_url_is_one_line(
    tmp_path: Path, url: str, expected: str, command: tuple[str, ...]
) -> None:
    line = one_line_error(billfold(tmp_path, *command, database_url=url))
    assert line.startswith("error: configuration: BILLFOLD_DATABASE_URL: ")
    assert expected in line
    assert "use sqlite:///" in line


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"max_body_bytes": "lots"}, "BILLFOLD_MAX_BODY_BYTES: Input should be a valid integer"),
        ({"mode": "cloud"}, "BILLFOLD_MODE"),
        ({"ingest": "http://nats:4222"}, "BILLFOLD_INGEST: must be a nats:// URL"),
        ({"log_format": "xml"}, "BILLFOLD_LOG_FORMAT"),
        ({"secret_key": "short"}, "at least 32 characters"),
    ],
)
def test_bad_settings_are_one_line(
    tmp_path: Path, variables: dict[str, str], expected: str
) -> None:
    line = one_line_error(billfold(tmp_path, "tenants", "list", **variables))
    assert line.startswith("error: configuration: ")
    assert expected in line


# --- the NATS client is an optional extra ----------------------------------------------

WITHOUT_NATS = "import sys; sys.modules['nats'] = None  # as if nats-py were not installed\n"


def python(cwd: Path, code: str, **variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (this interpreter, our own code)
        [sys.executable, "-c", WITHOUT_NATS + code],
        cwd=cwd,
        env=environment(**variables),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_app_and_the_cli_import_without_the_nats_client(tmp_path: Path) -> None:
    result = python(
        tmp_path,
        "import billfold.asgi, billfold.cli\n"
        "assert 'nats' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print('ok')\n",
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("command", [("worker", "ingest"), ("serve",)])
def test_nats_ingest_without_the_nats_client_says_how_to_install_it(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = python(
        tmp_path,
        f"sys.argv = ['billfold', *{list(command)!r}]\nfrom billfold.cli import main\nmain()\n",
        database_url=f"sqlite:///{tmp_path / 'b.db'}",
        ingest="nats://127.0.0.1:4222",
    )
    line = one_line_error(result)
    assert "pip install 'billfold[nats]'" in line


def test_serve_refuses_a_database_an_older_release_migrated(tmp_path: Path) -> None:
    """A database at an older migration would serve 500s on the tables it lacks."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008")
    line = one_line_error(billfold(tmp_path, "serve", "--port", "1", database_url=url))
    assert f"the database is at migration 0008, this release needs {head()}" in line
    assert line.endswith("run `billfold migrate`")
