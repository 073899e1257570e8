"""Throughput and latency of the entitlement check against the authenticated empty endpoint.

Run: `make bench`, or `.venv/bin/python bench/check.py [--duration 10] [--rounds 3]
[--customers 1000] [--light-connections 2] [--pool-size N] [--skip-sqlite] [--strict]`.

Everything is set up here and torn down again, also on failure, Ctrl-C or SIGTERM:

1. a scratch PostgreSQL database (`billfold_bench_<random>` next to the admin database in
   `BILLFOLD_BENCH_POSTGRES_URL`, default `postgresql://postgres@127.0.0.1:5432/test`), migrated,
   then `billfold init --plans examples/plans.yaml`, whose admin key seeds customers through the
   API (subscriptions to `pro`, feature grants, plain customers) and creates a `service` key;
2. the real server, `billfold serve` (1 uvicorn worker, uvloop + httptools) on a free port of
   127.0.0.1, started as a subprocess and stopped at the end;
3. every customer the load names is checked once (the steady state: warm in-process caches,
   which both backends keep), then `wrk --latency` with 32 connections, after a warm-up, on
   `GET /v1/ping` (authenticated, does nothing else: the baseline) and on
   `POST /v1/entitlements/check` with 4,000 bodies (limit and boolean features) spread over the
   seeded customers and, for one in ten, 100 unknown ones (`--unknown-customers`); then both
   again at light load (2 connections), where latency is service time rather than queueing;
4. the same on a temporary SQLite file, unless `--skip-sqlite`.

Besides requests/s and latency it prints, per request, the CPU time of the server process, of the
PostgreSQL backends serving the scratch database and of wrk, the connections PostgreSQL saw
opened (pool churn), and how much CPU other processes used meanwhile: on a shared machine that
last column says whether a run can be trusted.

Needs `wrk` on PATH (`apt-get install -y wrk`). Non-2xx counts come from the server's own
`/metrics` (request counter by route and status, read before and after each run), socket errors
and the error answers that actually reached the client from wrk; when the server answered 5xx,
the end of its log is printed. The goals: on PostgreSQL, check/ping throughput ratio >= 0.7 and
check p99 <= 10 ms; on SQLite, the check at least half as fast as on PostgreSQL in the same run
(both backends keep the same caches; decisions 0009 and 0031). Exit status: 1 if a run had
socket errors, error answers that reached wrk, or more undelivered error answers than
connections (wrk stops with requests in flight), since the numbers are then meaningless; 2 if
wrk is missing; goal misses fail only with `--strict`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from billfold.kit.db import async_url
from billfold.kit.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "examples" / "plans.yaml"
HOST = "127.0.0.1"
ADMIN_URL = os.environ.get(
    "BILLFOLD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
PING = "/v1/ping"
CHECK = "/v1/entitlements/check"
GOAL_RATIO = 0.7
GOAL_P99_MS = 10.0
# The embedded default: SQLite's check at least this share of PostgreSQL's, in the same run.
GOAL_SQLITE_SHARE = 0.5
UNKNOWN_SHARE = 0.1  # of check requests naming a customer that was never seeded
BODY_VARIANTS = 4_000  # distinct check requests wrk cycles through
SEED_CONCURRENCY = 4
STATS_SETTLE_S = 1.5
DRAIN_S = 1.0
BUSY_CORES = 0.15  # foreign CPU use during a run above which figures are flagged


class BenchError(RuntimeError):
    """The bench could not set up or run; the message says what to do."""


@dataclass(frozen=True)
class Cpu:
    """CPU time per request (microseconds) of each party, and new database connections."""

    server_us: float
    database_us: float | None  # PostgreSQL backends serving the scratch database
    wrk_us: float
    new_connections: int | None  # sessions opened on the scratch database during the run
    others_cores: float  # CPU the rest of the machine used meanwhile, in cores (noise)


@dataclass(frozen=True)
class Measurement:
    endpoint: str
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    statuses: dict[str, int]  # as the server counted its answers (its /metrics)
    received_errors: int  # answers >= 400 that reached wrk
    connections: int
    cpu: Cpu

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    @property
    def undelivered(self) -> int:
        """Non-2xx answers that never reached wrk: it closes its connections at the end of a
        run with requests in flight, and the server may answer those with an error."""
        return max(self.non_2xx - self.received_errors, 0)

    @property
    def valid(self) -> bool:
        return (
            self.socket_errors == 0
            and self.received_errors == 0
            and self.undelivered <= self.connections
        )


@dataclass
class BackendResult:
    name: str
    detail: str
    rounds: list[tuple[Measurement, Measurement]] = field(default_factory=list)
    light: list[Measurement] = field(default_factory=list)  # at --light-connections
    light_connections: int = 0

    def median(self, index: int) -> Measurement:
        runs = [pair[index] for pair in self.rounds]
        if len(runs) == 1:
            return runs[0]
        statuses: dict[str, int] = {}
        for run in runs:
            for status, n in run.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        return Measurement(
            endpoint=runs[0].endpoint,
            requests=sum(r.requests for r in runs),
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p90_ms=statistics.median(r.p90_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
            max_ms=max(r.max_ms for r in runs),
            socket_errors=sum(r.socket_errors for r in runs),
            statuses=statuses,
            received_errors=sum(r.received_errors for r in runs),
            connections=runs[0].connections,
            cpu=Cpu(
                server_us=statistics.median(r.cpu.server_us for r in runs),
                database_us=_median_or_none([r.cpu.database_us for r in runs]),
                wrk_us=statistics.median(r.cpu.wrk_us for r in runs),
                new_connections=_median_or_none([r.cpu.new_connections for r in runs]),
                others_cores=max(r.cpu.others_cores for r in runs),
            ),
        )


def _median_or_none(values: Sequence[float | None]) -> Any:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --- the environment --------------------------------------------------------------------


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{head}{' (uncommitted changes)' if dirty else ''}"


def wrk_version(wrk: str) -> str:
    result = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    words = (result.stdout or result.stderr).split()
    return words[1] if len(words) > 1 else "?"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def billfold_executable() -> str:
    beside = Path(sys.executable).parent / "billfold"
    if beside.exists():
        return str(beside)
    found = shutil.which("billfold")
    if found is None:
        raise BenchError("no `billfold` command: run `make install` first")
    return found


def server_env(database_url: str, secret_key: str) -> dict[str, str]:
    # Our own BILLFOLD_ settings are the bench's to choose, except how the server logs
    # (BILLFOLD_LOG_LEVEL=WARNING: no access lines, to see what they cost).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("BILLFOLD_") or k.startswith("BILLFOLD_LOG_")
    }
    env["BILLFOLD_DATABASE_URL"] = database_url
    env["BILLFOLD_SECRET_KEY"] = secret_key
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- where the CPU goes (Linux /proc; zero where unavailable) -------------------------------

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (`--workers N` serves from children)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree}
        grew = not found <= tree
        tree |= found
    return sum(cpu_seconds(member) for member in tree)


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent not idle since boot (from /proc/stat)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / TICKS


def backends_of(database: str) -> dict[int, float]:
    """CPU seconds of each live PostgreSQL backend connected to `database` (by process title)."""
    found: dict[int, float] = {}
    marker = f" {database} ".encode()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"postgres: ") and marker in title:
            found[int(entry.name)] = cpu_seconds(int(entry.name))
    return found


@dataclass(frozen=True)
class Postgres:
    admin_url: str
    database: str

    def sessions(self) -> int:
        """Connections ever opened to the scratch database (`pg_stat_database.sessions`)."""
        statement = f"SELECT sessions FROM pg_stat_database WHERE datname = '{self.database}'"
        return int(asyncio.run(_admin_execute(self.admin_url, statement)) or 0)


@dataclass(frozen=True)
class Snapshot:
    server: float
    backends: dict[int, float]
    sessions: int | None
    children: float
    machine: float
    at: float

    @classmethod
    def take(cls, server_pid: int, postgres: Postgres | None) -> Snapshot:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            server=tree_cpu_seconds(server_pid),
            backends=backends_of(postgres.database) if postgres else {},
            sessions=postgres.sessions() if postgres else None,
            children=usage.ru_utime + usage.ru_stime,
            machine=machine_busy_seconds(),
            at=time.monotonic(),
        )

    def cpu_until(self, later: Snapshot, requests: int) -> Cpu:
        per = 1e6 / max(requests, 1)
        server = later.server - self.server
        database = sum(cpu - self.backends.get(pid, 0.0) for pid, cpu in later.backends.items())
        wrk = later.children - self.children
        others = later.machine - self.machine - server - database - wrk
        return Cpu(
            server_us=server * per,
            database_us=database * per if self.sessions is not None else None,
            wrk_us=wrk * per,
            others_cores=max(others, 0.0) / max(later.at - self.at, 1e-9),
            new_connections=(
                later.sessions - self.sessions
                if later.sessions is not None and self.sessions is not None
                else None
            ),
        )


# --- PostgreSQL scratch database ----------------------------------------------------------


async def _admin_execute(url: str, statement: str) -> Any:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


# The columns a bench COPYs usage events into, in the order its records give them.
USAGE_EVENT_COLUMNS = [
    "id",
    "tenant_id",
    "idempotency_key",
    "customer",
    "type",
    "service",
    "correlation_id",
    "occurred_at",
    "received_at",
    "properties",
]


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[tuple[str, str, Postgres]]:
    """A new, empty database for this run; dropped on the way out whatever happened."""
    name = f"billfold_bench_{secrets.token_hex(4)}"
    try:
        version = asyncio.run(_admin_execute(admin_url, "SHOW server_version"))
        asyncio.run(_admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    except Exception as error:
        raise BenchError(
            f"cannot create a database at {make_url(admin_url).render_as_string()}: {error}\n"
            "set BILLFOLD_BENCH_POSTGRES_URL or pass --skip-postgres"
        ) from error
    try:
        yield (
            make_url(admin_url).set(database=name).render_as_string(hide_password=False),
            f"PostgreSQL {version}, scratch database {name}",
            Postgres(admin_url, name),
        )
    finally:
        try:
            asyncio.run(_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as error:  # report, but let the original failure win
            print(f"warning: could not drop database {name}: {error}", file=sys.stderr)


# --- the server ---------------------------------------------------------------------------


class Server:
    """`billfold serve` in a process of its own, stopped by `stop()` (idempotent)."""

    def __init__(
        self, env: Mapping[str, str], workdir: Path, label: str, *, workers: int = 1
    ) -> None:
        self.workers = workers
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.log_path = workdir / f"server-{label}.log"
        self._env = dict(env)
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        command = [billfold_executable(), "serve", "--host", HOST, "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command,
                env=self._env,
                cwd=self._workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C reaches us; we stop it in order
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BenchError(f"the server exited early:\n{tail(self.log_path)}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"the server did not answer /healthz in {timeout:.0f}s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def statuses(self, route: str) -> dict[str, int]:
        """Requests answered on `route` so far, by status, from the server's /metrics."""
        try:
            body = httpx.get(f"{self.base}/metrics", timeout=10.0).text
        except httpx.HTTPError as error:
            message = f"the server stopped answering ({error}):\n{tail(self.log_path)}"
            raise BenchError(message) from error
        counts: dict[str, int] = {}
        for line in body.splitlines():
            if not line.startswith("billfold_http_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
            if labels.get("route") == route:
                status = labels.get("status", "?")
                counts[status] = counts.get(status, 0) + int(float(line.rsplit(" ", 1)[1]))
        return counts


def billfold_init(env: Mapping[str, str], workdir: Path) -> str:
    """`billfold init` with the example plans; the admin token it prints once."""
    result = subprocess.run(
        [billfold_executable(), "init", "--plans", str(PLANS)],
        env=dict(env),
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise BenchError(f"billfold init failed:\n{result.stdout}{result.stderr}")
    for line in result.stdout.splitlines():
        if line.strip().startswith("bfk_"):
            return line.strip()
    raise BenchError(f"billfold init printed no admin key:\n{result.stdout}")


# --- seeding -------------------------------------------------------------------------------


def seed_plan(customers: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Requests giving customers `c-0`..`c-<n-1>` a mix of grants.

    Per ten customers: 3 on `pro`, 2 with `spaces.max` = 100, 1 with both, 1 with
    `share.enabled`, 3 with no grant of their own (they hold the default plan).
    """
    requests: list[tuple[str, str, dict[str, Any]]] = []
    for n in range(customers):
        customer = f"c-{n}"
        kind = n % 10
        if kind in (0, 1, 2, 5):
            requests.append(("POST", f"/v1/customers/{customer}/subscriptions", {"plan": "pro"}))
        if kind in (3, 4, 5):
            grant = {"feature": "spaces.max", "value": 100}
            requests.append(("POST", f"/v1/customers/{customer}/grants", grant))
        if kind == 6:
            grant = {"feature": "share.enabled", "value": True}
            requests.append(("POST", f"/v1/customers/{customer}/grants", grant))
        if kind in (7, 8, 9):
            requests.append(("PUT", f"/v1/customers/{customer}", {"name": f"Customer {n}"}))
    return requests


async def _seed(base: str, admin_token: str, customers: int) -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    limits = httpx.Limits(max_connections=SEED_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:
        queue = list(reversed(seed_plan(customers)))

        async def worker() -> None:
            while queue:
                method, path, body = queue.pop()
                response = await client.request(method, path, json=body, timeout=30.0)
                if response.status_code not in (200, 201):
                    raise BenchError(
                        f"seeding {method} {path}: {response.status_code} {response.text}"
                    )

        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
        response = await client.post(
            "/v1/keys", json={"name": "bench", "scope": "service"}, timeout=30.0
        )
        if response.status_code != 201:
            raise BenchError(f"creating the service key: {response.status_code} {response.text}")
        return str(response.json()["token"])


def seed(base: str, admin_token: str, customers: int) -> str:
    """Seed through the API; return a new `service` key's token for the load."""
    return asyncio.run(_seed(base, admin_token, customers))


async def _prime(base: str, token: str, bodies: Sequence[str]) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first: dict[str, str] = {}
    for body in bodies:
        first.setdefault(json.loads(body)["customer"], body)
    queue = list(first.values())
    limits = httpx.Limits(max_connections=SEED_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                response = await client.post(CHECK, content=body, timeout=30.0)
                if response.status_code != 200:
                    raise BenchError(f"check {body}: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
    return len(first)


def prime(base: str, token: str, bodies: Sequence[str]) -> int:
    """Check every customer the load names once, so the runs measure the steady state (warm
    in-process caches, where the server has them); also proves every body is answered 200.
    Returns how many customers were checked."""
    return asyncio.run(_prime(base, token, bodies))


# --- load ------------------------------------------------------------------------------------


def check_bodies(customers: int, unknown: int, count: int, rng: random.Random) -> list[str]:
    bodies: list[str] = []
    for _ in range(count):
        if rng.random() < UNKNOWN_SHARE:
            customer = f"u-{rng.randrange(unknown)}"
        else:
            customer = f"c-{rng.randrange(customers)}"
        if rng.random() < 0.5:
            body: dict[str, Any] = {
                "customer": customer,
                "feature": "spaces.max",
                "current": rng.randrange(60),
            }
        else:
            body = {"customer": customer, "feature": "share.enabled"}
        bodies.append(json.dumps(body, separators=(",", ":")))
    return bodies


LUA_TEMPLATE = """-- generated by bench/check.py
wrk.method = "{method}"
wrk.headers["Authorization"] = "Bearer {token}"
{content_type}
local bodies = {{
{bodies}
}}
local requests = {{}}
local index = 0
local threads = 0
local sent = 0
local salt = "0"
local cold_every = {cold_every}  -- every Nth request names a customer never seen (0: none)

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7919)
end

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format(nil, "{path}", nil, body ~= "" and body or nil)
  end
  index = (offset or 0) % #requests
  salt = args[1] or "0"
end

function request()
  sent = sent + 1
  if cold_every > 0 and sent % cold_every == 0 then
    return wrk.format(nil, "{path}", nil, string.format(
      '{{"customer":"n-%s-%d-%d","feature":"share.enabled"}}', salt, offset or 0, sent))
  end
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def lua_script(
    path: Path,
    *,
    method: str,
    route: str,
    token: str,
    bodies: Sequence[str],
    cold_every: int = 0,
) -> Path:
    for body in bodies:
        if "]==]" in body:
            raise BenchError("a body cannot be quoted for Lua")
    path.write_text(
        LUA_TEMPLATE.format(
            method=method,
            token=token,
            path=route,
            content_type='wrk.headers["Content-Type"] = "application/json"' if bodies[0] else "",
            bodies=",\n".join(f"  [==[{body}]==]" for body in bodies),
            cold_every=cold_every,
        ),
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class Load:
    wrk: str
    threads: int
    connections: int
    duration: int
    warmup: int


def run_wrk(load: Load, script: Path, url: str, seconds: int, output: Path) -> dict[str, int]:
    command = [
        load.wrk,
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        secrets.token_hex(4),  # salts the never-seen customers of --cold-every, per run
    ]
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"wrk did not finish: {' '.join(command)}") from error
    output.write_text(result.stdout + result.stderr, encoding="utf-8")
    for line in result.stdout.splitlines():
        if line.startswith("BENCH "):
            parsed: dict[str, int] = json.loads(line.removeprefix("BENCH "))
            return parsed
    raise BenchError(f"wrk gave no summary (exit {result.returncode}):\n{result.stderr[-2000:]}")


def measure(
    server: Server,
    postgres: Postgres | None,
    load: Load,
    script: Path,
    endpoint: str,
    route: str,
    workdir: Path,
) -> Measurement:
    url = server.base + route
    slug = route.strip("/").replace("/", "-")
    if load.warmup > 0:
        run_wrk(load, script, url, load.warmup, workdir / f"wrk-warmup-{slug}.txt")
        time.sleep(DRAIN_S)  # let the server finish what the warm-up left in flight
    before = server.statuses(route)
    start = Snapshot.take(server.pid, postgres)
    raw = run_wrk(load, script, url, load.duration, workdir / f"wrk-{slug}.txt")
    time.sleep(STATS_SETTLE_S)  # let backends report their session counts
    end = Snapshot.take(server.pid, postgres)
    after = server.statuses(route)
    statuses = {
        status: after.get(status, 0) - before.get(status, 0)
        for status in after
        if after.get(status, 0) - before.get(status, 0)
    }
    return Measurement(
        endpoint=endpoint,
        requests=raw["requests"],
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50"] / 1000,
        p90_ms=raw["p90"] / 1000,
        p99_ms=raw["p99"] / 1000,
        max_ms=raw["max"] / 1000,
        socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
        statuses=statuses,
        received_errors=raw["status"],
        connections=load.connections,
        cpu=start.cpu_until(end, raw["requests"]),
    )


def run_backend(
    name: str,
    detail: str,
    database_url: str,
    postgres: Postgres | None,
    workdir: Path,
    load: Load,
    args: argparse.Namespace,
) -> BackendResult:
    print(f"\n== {name}: {detail}", flush=True)
    env = server_env(database_url, secrets.token_hex(20))
    if args.pool_size is not None:
        env["BILLFOLD_DATABASE_POOL_SIZE"] = str(args.pool_size)
    started = time.perf_counter()
    upgrade(database_url)
    admin_token = billfold_init(env, workdir)
    server = Server(env, workdir, name.lower())
    result = BackendResult(name=name, detail=detail)
    try:
        server.start()
        seeding = time.perf_counter()
        token = seed(server.base, admin_token, args.customers)
        priming = time.perf_counter()
        bodies = check_bodies(
            args.customers, args.unknown_customers, BODY_VARIANTS, random.Random(args.seed)
        )
        primed = prime(server.base, token, bodies)
        print(
            f"   migrated and initialised in {seeding - started:.1f}s; {args.customers} "
            f"customers seeded through the API in {priming - seeding:.1f}s; {primed} customers "
            f"checked once in {time.perf_counter() - priming:.1f}s (primes caches); "
            f"server pid {server.pid} on {server.base}",
            flush=True,
        )
        label = name.lower()
        ping_script = lua_script(
            workdir / f"ping-{label}.lua", method="GET", route=PING, token=token, bodies=[""]
        )
        check_script = lua_script(
            workdir / f"check-{label}.lua",
            method="POST",
            route=CHECK,
            token=token,
            bodies=bodies,
            cold_every=args.cold_every,
        )
        for round_number in range(1, args.rounds + 1):
            ping = measure(server, postgres, load, ping_script, f"GET  {PING}", PING, workdir)
            check = measure(server, postgres, load, check_script, f"POST {CHECK}", CHECK, workdir)
            result.rounds.append((ping, check))
            if args.rounds > 1:
                print(f"   round {round_number}:", flush=True)
                print_table([ping, check], indent="     ")
        if args.light_connections:
            light = dataclasses.replace(load, threads=1, connections=args.light_connections)
            result.light_connections = light.connections
            result.light = [
                measure(server, postgres, light, ping_script, f"GET  {PING}", PING, workdir),
                measure(server, postgres, light, check_script, f"POST {CHECK}", CHECK, workdir),
            ]
    finally:
        server.stop()
    runs = [m for pair in result.rounds for m in pair] + result.light
    if any(status.startswith("5") for m in runs for status in m.statuses):
        print(f"   the server answered 5xx; the end of its log:\n{server_errors(server.log_path)}")
    return result


def server_errors(log: Path, lines: int = 40) -> str:
    """The last traceback in the server's log (or its last lines), indented."""
    text = tail(log, 2_000).splitlines()
    starts = [i for i, line in enumerate(text) if line.startswith("Traceback")]
    chosen = text[max(starts[-1] - 1, 0) :] if starts else text
    return "\n".join(f"     | {line}" for line in chosen[-lines:])


# --- report -----------------------------------------------------------------------------------


def print_table(rows: Sequence[Measurement], indent: str = "   ") -> None:
    print(
        f"{indent}{'endpoint':<32} {'req/s':>7} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'non-2xx':>7} {'sockerr':>7}"
    )
    for row in rows:
        print(
            f"{indent}{row.endpoint:<32} {row.rps:>7.0f} {row.p50_ms:>7.2f} {row.p90_ms:>7.2f} "
            f"{row.p99_ms:>7.2f} {row.max_ms:>7.1f} {row.non_2xx:>7} {row.socket_errors:>7}"
        )
        odd = {s: n for s, n in row.statuses.items() if not s.startswith("2")}
        if odd:
            print(f"{indent}  statuses other than 2xx: {odd}")
        if row.undelivered:
            print(
                f"{indent}  {row.undelivered} of them never reached wrk: it closed the "
                "connection at the end of the run (see the server log above)"
            )
    print(
        f"{indent}{'CPU per request, microseconds':<32} {'server':>7} {'db':>7} {'wrk':>7} "
        f"{'new db conns':>15} {'others':>7}"
    )
    for row in rows:
        cpu = row.cpu
        database = "-" if cpu.database_us is None else f"{cpu.database_us:.0f}"
        opened = "-" if cpu.new_connections is None else f"{cpu.new_connections:g}"
        print(
            f"{indent}{row.endpoint:<32} {cpu.server_us:>7.0f} {database:>7} {cpu.wrk_us:>7.0f} "
            f"{opened:>15} {cpu.others_cores:>5.2f}c"
        )
    if any(row.cpu.others_cores > BUSY_CORES for row in rows):
        print(
            f"{indent}NOTE: other processes used over {BUSY_CORES} of a core during a run "
            "(`others`); the throughput and latency figures are depressed and noisy"
        )


def report(result: BackendResult, *, with_goal: bool, connections: int) -> tuple[bool, bool]:
    """Print a backend's figures; return (measurement clean, goal met)."""
    ping, check = result.median(0), result.median(1)
    how = "" if len(result.rounds) == 1 else f" (median of {len(result.rounds)} rounds)"
    print(f"\n{result.name}{how}: {result.detail}")
    print_table([ping, check])
    ratio = check.rps / ping.rps if ping.rps else 0.0
    clean = all(m.valid for pair in result.rounds for m in pair)
    met = ratio >= GOAL_RATIO and check.p99_ms <= GOAL_P99_MS
    line = f"   ratio check/ping = {ratio:.2f}"
    if with_goal:
        line += (
            f"  [goal >= {GOAL_RATIO}: {'met' if ratio >= GOAL_RATIO else 'MISSED'}]"
            f"   check p99 = {check.p99_ms:.2f} ms  [goal <= {GOAL_P99_MS:g} ms: "
            f"{'met' if check.p99_ms <= GOAL_P99_MS else 'MISSED'}]"
        )
    else:
        line += "  (for information; the goal is stated for PostgreSQL)"
    print(line)
    if with_goal and check.rps:
        # A closed loop of N connections keeps N requests in flight: mean latency = N / rate.
        print(
            f"   (at {connections} connections mean latency is {connections} / throughput = "
            f"{1000 * connections / check.rps:.0f} ms; p99 <= {GOAL_P99_MS:g} ms there needs "
            f"> {1000 * connections / GOAL_P99_MS:.0f} req/s)"
        )
    if result.light:
        print(f"   at light load, {result.light_connections} connections:")
        print_table(result.light)
    clean = clean and all(m.valid for m in result.light)
    if not clean:
        print("   WARNING: errors or non-2xx answers during the runs; these figures are invalid")
    elif any(m.non_2xx for pair in result.rounds for m in pair) or any(
        m.non_2xx for m in result.light
    ):
        print(
            "   NOTE: some requests' clients left before the answer (wrk stopping with requests "
            "in flight); wrk received none of those answers, so the figures stand"
        )
    return clean, met


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each")
    parser.add_argument(
        "--rounds", type=int, default=3, help="ping+check pairs per backend (median reported)"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--light-connections",
        type=int,
        default=2,
        help="also measure at this many connections, for latency without queueing (0: skip)",
    )
    parser.add_argument("--customers", type=int, default=1_000, help="customers to seed")
    parser.add_argument(
        "--unknown-customers",
        type=int,
        default=100,
        help="distinct never-seeded customers named by 10%% of checks",
    )
    parser.add_argument(
        "--cold-every",
        type=int,
        default=0,
        help="every Nth check names a customer never seen before: a cache miss (0: none)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="BILLFOLD_DATABASE_POOL_SIZE for the server (default: the app's own default)",
    )
    parser.add_argument("--seed", type=int, default=20_260_601, help="random seed for bodies")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the goal is missed")
    args = parser.parse_args(argv)
    for name in ("duration", "rounds", "connections", "threads", "customers", "unknown_customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.light_connections < 0 or args.cold_every < 0:
        parser.error("--light-connections and --cold-every must be >= 0")
    if args.pool_size is not None and args.pool_size < 1:
        parser.error("--pool-size must be at least 1")
    if not 0 <= args.warmup <= 60 or args.duration > 600 or args.rounds > 20:
        parser.error("keep --warmup within 0..60, --duration <= 600 and --rounds <= 20")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: server, database, files


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "bench/check.py needs `wrk` (an HTTP load generator) on PATH.\n"
            "Install it with `apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk`.",
            file=sys.stderr,
        )
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    load = Load(wrk, args.threads, args.connections, args.duration, args.warmup)
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load1, load5, _ = os.getloadavg()
    print("Billfold check bench")
    print(f"   commit {git_commit()}")
    print(
        f"   {cores} cores ({usable} usable), load average {load1:.2f} / {load5:.2f}, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    print(
        f"   wrk {wrk_version(wrk)} -t{load.threads} -c{load.connections} "
        f"-d{load.duration}s (warm-up {load.warmup}s), "
        f"server: `billfold serve`, 1 uvicorn worker on {HOST}"
    )
    cold = f", every {args.cold_every}th a never-seen customer" if args.cold_every else ""
    print(
        f"   check bodies: {BODY_VARIANTS} over {args.customers} customers, 1 in 10 naming one "
        f"of {args.unknown_customers} unknown ones{cold}"
    )
    if load1 > 0.5 * max(cores, 1):
        print("   NOTE: the machine is already busy; figures will be low and noisy")

    workdir = Path(tempfile.mkdtemp(prefix="billfold-bench-"))
    results: list[tuple[BackendResult, bool]] = []
    try:
        if not args.skip_postgres:
            with scratch_postgres(ADMIN_URL) as (url, detail, postgres):
                pg = run_backend("PostgreSQL", detail, url, postgres, workdir, load, args)
                results.append((pg, True))
        if not args.skip_sqlite:
            url = f"sqlite:///{workdir / 'bench.db'}"
            detail = f"SQLite file in {workdir}"
            results.append((run_backend("SQLite", detail, url, None, workdir, load, args), False))
    except BenchError as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n== results")
    clean = goal = True
    for result, with_goal in results:
        result_clean, result_met = report(result, with_goal=with_goal, connections=args.connections)
        clean = clean and result_clean
        goal = goal and (result_met or not with_goal)
    by_name = {result.name: result for result, _with_goal in results}
    if {"PostgreSQL", "SQLite"} <= by_name.keys():
        goal = sqlite_share(by_name["SQLite"], by_name["PostgreSQL"]) and goal
    if not clean:
        return 1
    return 1 if args.strict and not goal else 0


def sqlite_share(sqlite: BackendResult, postgres: BackendResult) -> bool:
    """Print SQLite's check throughput as a share of PostgreSQL's in this run; the goal met?"""
    sqlite_rps, postgres_rps = sqlite.median(1).rps, postgres.median(1).rps
    share = sqlite_rps / postgres_rps if postgres_rps else 0.0
    met = share >= GOAL_SQLITE_SHARE
    print(
        f"\nSQLite check / PostgreSQL check = {sqlite_rps:.0f} / {postgres_rps:.0f} = "
        f"{share:.2f}  [goal >= {GOAL_SQLITE_SHARE}: {'met' if met else 'MISSED'}]"
    )
    return met


if __name__ == "__main__":
    sys.exit(main())
