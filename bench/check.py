"""Throughput and latency of the entitlement check against the authenticated empty endpoint.

Run: `make bench`, or `.venv/bin/python bench/check.py [--duration 10] [--rounds 1]
[--customers 1000] [--skip-sqlite] [--strict]`.

Everything is set up here and torn down again, also on failure or Ctrl-C:

1. a scratch PostgreSQL database (`billfold_bench_<random>` next to the admin database in
   `BILLFOLD_BENCH_POSTGRES_URL`, default `postgresql://postgres@127.0.0.1:5432/test`), migrated,
   then `billfold init --plans examples/plans.yaml`, whose admin key seeds customers through the
   API (subscriptions to `pro`, feature grants, plain customers) and creates a `service` key;
2. the real server, `billfold serve` (1 uvicorn worker, uvloop + httptools) on a free port of
   127.0.0.1, started as a subprocess and stopped at the end;
3. `wrk --latency` with 32 connections, warmed up first, on `GET /v1/ping` (authenticated, does
   nothing else: the baseline) and on `POST /v1/entitlements/check` with bodies spread over the
   seeded customers and some unknown ones (limit and boolean features);
4. the same on a temporary SQLite file, unless `--skip-sqlite`.

Needs `wrk` on PATH (`apt-get install -y wrk`). Non-2xx counts come from the server's own
`/metrics` (request counter by route and status, read before and after each run), socket errors
from wrk. The goal (on PostgreSQL): check/ping throughput ratio >= 0.7 and check p99 <= 10 ms.
Exit status: 1 if a run saw errors or non-2xx answers (the numbers are then meaningless), 2 if
wrk is missing; goal misses fail only with `--strict`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
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
UNKNOWN_SHARE = 0.1  # of check requests naming a customer that was never seeded
BODY_VARIANTS = 4_000  # distinct check requests wrk cycles through
SEED_CONCURRENCY = 4


class BenchError(RuntimeError):
    """The bench could not set up or run; the message says what to do."""


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
    statuses: dict[str, int]

    @property
    def non_2xx(self) -> int:
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))


@dataclass
class BackendResult:
    name: str
    detail: str
    rounds: list[tuple[Measurement, Measurement]] = field(default_factory=list)

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
        )


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLFOLD_")}
    env["BILLFOLD_DATABASE_URL"] = database_url
    env["BILLFOLD_SECRET_KEY"] = secret_key
    return env


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- PostgreSQL scratch database ----------------------------------------------------------


async def _admin_execute(url: str, statement: str) -> Any:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(statement))
            return result.scalar() if result.returns_rows else None
    finally:
        await engine.dispose()


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[tuple[str, str]]:
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
        )
    finally:
        try:
            asyncio.run(_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except Exception as error:  # report, but let the original failure win
            print(f"warning: could not drop database {name}: {error}", file=sys.stderr)


# --- the server ---------------------------------------------------------------------------


class Server:
    """`billfold serve` in a process of its own, stopped by `stop()` (idempotent)."""

    def __init__(self, env: Mapping[str, str], workdir: Path, label: str) -> None:
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
        body = httpx.get(f"{self.base}/metrics", timeout=10.0).text
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


# --- load ------------------------------------------------------------------------------------


def check_bodies(customers: int, count: int, rng: random.Random) -> list[str]:
    bodies: list[str] = []
    for _ in range(count):
        if rng.random() < UNKNOWN_SHARE:
            customer = f"u-{rng.randrange(1_000_000)}"
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

function setup(thread)
  threads = threads + 1
  thread:set("offset", threads * 7919)
end

function init(args)
  for i, body in ipairs(bodies) do
    requests[i] = wrk.format(nil, "{path}", nil, body ~= "" and body or nil)
  end
  index = (offset or 0) % #requests
end

function request()
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


def lua_script(path: Path, *, method: str, route: str, token: str, bodies: Sequence[str]) -> Path:
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
    server: Server, load: Load, script: Path, endpoint: str, route: str, workdir: Path
) -> Measurement:
    url = server.base + route
    slug = route.strip("/").replace("/", "-")
    if load.warmup > 0:
        run_wrk(load, script, url, load.warmup, workdir / f"wrk-warmup-{slug}.txt")
    before = server.statuses(route)
    raw = run_wrk(load, script, url, load.duration, workdir / f"wrk-{slug}.txt")
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
    )


def run_backend(
    name: str, detail: str, database_url: str, workdir: Path, load: Load, args: argparse.Namespace
) -> BackendResult:
    print(f"\n== {name}: {detail}", flush=True)
    env = server_env(database_url, secrets.token_hex(20))
    started = time.perf_counter()
    upgrade(database_url)
    admin_token = billfold_init(env, workdir)
    server = Server(env, workdir, name.lower())
    result = BackendResult(name=name, detail=detail)
    try:
        server.start()
        token = seed(server.base, admin_token, args.customers)
        print(
            f"   set up in {time.perf_counter() - started:.1f}s: migrated, init, "
            f"{args.customers} customers seeded through the API, server pid {server.pid} "
            f"on {server.base}",
            flush=True,
        )
        label = name.lower()
        ping_script = lua_script(
            workdir / f"ping-{label}.lua", method="GET", route=PING, token=token, bodies=[""]
        )
        bodies = check_bodies(args.customers, BODY_VARIANTS, random.Random(args.seed))
        check_script = lua_script(
            workdir / f"check-{label}.lua", method="POST", route=CHECK, token=token, bodies=bodies
        )
        for round_number in range(1, args.rounds + 1):
            ping = measure(server, load, ping_script, f"GET  {PING}", PING, workdir)
            check = measure(server, load, check_script, f"POST {CHECK}", CHECK, workdir)
            result.rounds.append((ping, check))
            if args.rounds > 1:
                print(f"   round {round_number}:", flush=True)
                print_table([ping, check], indent="     ")
    finally:
        server.stop()
    return result


# --- report -----------------------------------------------------------------------------------


def print_table(rows: Sequence[Measurement], indent: str = "   ") -> None:
    print(
        f"{indent}{'endpoint':<32} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'non-2xx':>8} {'sock err':>8}"
    )
    for row in rows:
        print(
            f"{indent}{row.endpoint:<32} {row.rps:>8.0f} {row.p50_ms:>8.2f} {row.p90_ms:>8.2f} "
            f"{row.p99_ms:>8.2f} {row.max_ms:>8.2f} {row.non_2xx:>8} {row.socket_errors:>8}"
        )
        odd = {s: n for s, n in row.statuses.items() if not s.startswith("2")}
        if odd:
            print(f"{indent}  statuses other than 2xx: {odd}")


def report(result: BackendResult, *, with_goal: bool) -> tuple[bool, bool]:
    """Print a backend's figures; return (measurement clean, goal met)."""
    ping, check = result.median(0), result.median(1)
    how = "" if len(result.rounds) == 1 else f" (median of {len(result.rounds)} rounds)"
    print(f"\n{result.name}{how}: {result.detail}")
    print_table([ping, check])
    ratio = check.rps / ping.rps if ping.rps else 0.0
    clean = all(m.non_2xx == 0 and m.socket_errors == 0 for pair in result.rounds for m in pair)
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
    if not clean:
        print("   WARNING: errors or non-2xx answers during the runs; these figures are invalid")
    return clean, met


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each")
    parser.add_argument("--rounds", type=int, default=1, help="ping+check pairs per backend")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--customers", type=int, default=1_000, help="customers to seed")
    parser.add_argument("--seed", type=int, default=20_260_601, help="random seed for bodies")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 if the goal is missed")
    args = parser.parse_args(argv)
    for name in ("duration", "rounds", "connections", "threads", "customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
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
        f"-d{load.duration}s (warm-up {load.warmup}s), server: 1 uvicorn worker on {HOST}"
    )
    if load1 > 0.5 * max(cores, 1):
        print("   NOTE: the machine is already busy; figures will be low and noisy")

    workdir = Path(tempfile.mkdtemp(prefix="billfold-bench-"))
    results: list[tuple[BackendResult, bool]] = []
    try:
        if not args.skip_postgres:
            with scratch_postgres(ADMIN_URL) as (url, detail):
                results.append((run_backend("PostgreSQL", detail, url, workdir, load, args), True))
        if not args.skip_sqlite:
            url = f"sqlite:///{workdir / 'bench.db'}"
            detail = f"SQLite file in {workdir}"
            results.append((run_backend("SQLite", detail, url, workdir, load, args), False))
    except BenchError as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n== results")
    clean = goal = True
    for result, with_goal in results:
        result_clean, result_met = report(result, with_goal=with_goal)
        clean = clean and result_clean
        goal = goal and (result_met or not with_goal)
    if not clean:
        return 1
    return 1 if args.strict and not goal else 0


if __name__ == "__main__":
    sys.exit(main())
