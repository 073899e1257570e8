"""Sync vs async SQLAlchemy on Billfold's entitlement-check path, on SQLite and PostgreSQL.

Run: python bench/sync_vs_async.py [--rounds 2] [--duration 10] [--core-only]
Needs `wrk`, PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and fastapi, sqlalchemy[asyncio],
asyncpg, aiosqlite, psycopg[binary], uvicorn, uvloop, httptools, httpx. Each variant runs in its own
uvicorn process (1 worker, uvloop + httptools) on 127.0.0.1, loaded by `wrk -t2 -c32 --latency`.
Modes: async = `async def` endpoint + connection/auth dependencies; sync = the same shape in plain
`def` (threadpool: each sync dependency is a hop); sync1 (extra) = one `def` endpoint, one hop.
The box may be shared: each combo waits (bounded) for a quiet machine and is redone, at most twice,
when other processes used >25% of a core during it ("foreign CPU"). Scratch database `sva_bench`
and the temporary SQLite file are removed at the end.
"""

import argparse
import contextlib
import hashlib
import hmac
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import httpx
import psycopg
import sqlalchemy as sa
from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
PG_DB = "sva_bench"
TENANTS, PER_TENANT, FEATURES = 10, 1_000, 8  # 10,000 customers, ~25,000 grants
POOL: dict[str, Any] = {"pool_size": 20, "max_overflow": 0}  # overflow = connection churn
WRK = ["wrk", "-t2", "-c32", "--latency"]

md, C, T = sa.MetaData(), sa.Column, sa.Text
tenants = sa.Table("tenants", md, C("id", T, primary_key=True),
                   C("catalog_revision", sa.Integer, nullable=False))  # fmt: skip
api_keys = sa.Table(
    "api_keys", md, C("id", T, primary_key=True),
    C("tenant_id", T, sa.ForeignKey("tenants.id"), nullable=False),
    C("secret_hash", T, nullable=False), C("scope", T, nullable=False),
    C("revoked_at", sa.DateTime(timezone=True)),
)  # fmt: skip
customers = sa.Table(
    "customers", md, C("id", T, primary_key=True),
    C("tenant_id", T, sa.ForeignKey("tenants.id"), nullable=False),
    C("external_id", T, nullable=False), sa.UniqueConstraint("tenant_id", "external_id"),
)  # fmt: skip
grants = sa.Table(
    "grants", md, C("id", T, primary_key=True), C("tenant_id", T, nullable=False),
    C("customer_id", T, sa.ForeignKey("customers.id"), nullable=False, index=True),
    C("source", T, nullable=False), C("plan_version_id", T), C("feature_key", T),
    C("value", sa.JSON), C("priority", sa.Integer, nullable=False),
    C("starts_at", sa.DateTime, nullable=False), C("ends_at", sa.DateTime),
    C("revoked_at", sa.DateTime),
)  # fmt: skip

AUTH = (
    sa.select(api_keys.c.tenant_id, api_keys.c.secret_hash, api_keys.c.scope,
              api_keys.c.revoked_at, tenants.c.catalog_revision)
    .join_from(api_keys, tenants, api_keys.c.tenant_id == tenants.c.id)
    .where(api_keys.c.id == sa.bindparam("key_id"))
)  # fmt: skip
_now, g = sa.bindparam("now", type_=sa.DateTime), grants.c
_on = sa.and_(
    g.customer_id == customers.c.id, g.starts_at <= _now,
    sa.or_(g.ends_at.is_(None), g.ends_at > _now),
    sa.or_(g.revoked_at.is_(None), g.revoked_at > _now),
)  # fmt: skip
CHECK = (
    sa.select(customers.c.id, g.source, g.plan_version_id, g.feature_key, g.value, g.priority)
    .select_from(customers.outerjoin(grants, _on))
    .where(customers.c.tenant_id == sa.bindparam("t"), customers.c.external_id == sa.bindparam("x"))
)


AnyRow = sa.Row[*tuple[Any, ...]]


class CheckIn(BaseModel):
    customer: str
    feature: str


class Principal(NamedTuple):
    tenant_id: str
    catalog_revision: int


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # grants hold naive UTC timestamps


def split_key(authorization: str) -> tuple[str, str]:
    key_id, _, secret = authorization.removeprefix("Bearer ").partition(".")
    return key_id, secret


def verify(row: AnyRow | None, secret: str) -> Principal:
    good = row is not None and hmac.compare_digest(row.secret_hash, sha(secret))
    if row is None or not good or row.revoked_at is not None:
        raise HTTPException(401, "invalid api key")
    if "check" not in row.scope.split():
        raise HTTPException(403, "scope")
    return Principal(row.tenant_id, row.catalog_revision)


def params(p: Principal, body: CheckIn) -> dict[str, Any]:
    return {"t": p.tenant_id, "x": body.customer, "now": utcnow()}


def answer(body: CheckIn, p: Principal, rows: Sequence[AnyRow]) -> dict[str, Any]:
    if not rows:
        raise HTTPException(404, "unknown customer")
    live = [r for r in rows if r.source is not None]
    best = max((r for r in live if r.feature_key in (None, body.feature)),
               key=lambda r: r.priority, default=None)  # fmt: skip
    return {"customer": body.customer, "feature": body.feature, "allowed": best is not None,
            "value": best.value if best else None, "catalog_revision": p.catalog_revision,
            "live_grants": len(live)}  # fmt: skip


def build_app(mode: str, url: str) -> FastAPI:
    app = FastAPI()
    if mode == "async":
        aengine = create_async_engine(url, **POOL)

        async def aconn() -> AsyncIterator[AsyncConnection]:
            async with aengine.connect() as conn:
                yield conn

        AConn = Annotated[AsyncConnection, Depends(aconn)]

        async def aauth(conn: AConn, authorization: Annotated[str, Header()]) -> Principal:
            key_id, secret = split_key(authorization)
            return verify((await conn.execute(AUTH, {"key_id": key_id})).first(), secret)

        @app.get("/empty", response_model=None)
        async def aempty() -> dict[str, Any]:
            return {}

        @app.post("/v1/check", response_model=None)
        async def acheck(
            body: CheckIn, p: Annotated[Principal, Depends(aauth)], conn: AConn
        ) -> dict[str, Any]:
            return answer(body, p, (await conn.execute(CHECK, params(p, body))).all())

        return app

    engine = sa.create_engine(url, **POOL)

    @app.get("/empty", response_model=None)
    def empty() -> dict[str, Any]:
        return {}

    if mode == "sync1":

        @app.post("/v1/check", response_model=None)
        def check1(body: CheckIn, authorization: Annotated[str, Header()]) -> dict[str, Any]:
            key_id, secret = split_key(authorization)
            with engine.connect() as conn:
                p = verify(conn.execute(AUTH, {"key_id": key_id}).first(), secret)
                return answer(body, p, conn.execute(CHECK, params(p, body)).all())

        return app

    def sconn() -> Iterator[sa.Connection]:
        with engine.connect() as conn:
            yield conn

    SConn = Annotated[sa.Connection, Depends(sconn)]

    def sauth(conn: SConn, authorization: Annotated[str, Header()]) -> Principal:
        key_id, secret = split_key(authorization)
        return verify(conn.execute(AUTH, {"key_id": key_id}).first(), secret)

    @app.post("/v1/check", response_model=None)
    def check(
        body: CheckIn, p: Annotated[Principal, Depends(sauth)], conn: SConn
    ) -> dict[str, Any]:
        return answer(body, p, conn.execute(CHECK, params(p, body)).all())

    return app


def seed(url: str) -> None:
    """Same rows everywhere: a plan grant, a feature override, and for ~half a dead grant."""
    rnd, now, day = random.Random(42), utcnow(), timedelta(days=1)
    cust: list[dict[str, Any]] = []
    grs: list[dict[str, Any]] = []
    for t in range(TENANTS):
        for i in range(PER_TENANT):
            cid = f"c_{t}_{i}"
            cust.append({"id": cid, "tenant_id": f"t{t}", "external_id": f"ext_{t}_{i}"})
            for n in range(rnd.choice((2, 3))):
                grs.append({
                    "id": f"g_{t}_{i}_{n}", "tenant_id": f"t{t}", "customer_id": cid,
                    "source": "plan" if n == 0 else "override",
                    "plan_version_id": "pv_1" if n == 0 else None,
                    "feature_key": None if n == 0 else f"f{rnd.randrange(FEATURES)}",
                    "value": None if n == 0 else {"limit": rnd.randrange(1, 1000)},
                    "priority": 10 * n, "starts_at": now - 30 * day,
                    "ends_at": now - day if n == 2 and i % 2 else None,  # expired
                    "revoked_at": now - day if n == 2 and not i % 2 else None,  # revoked
                })  # fmt: skip
    engine = sa.create_engine(url)
    if url.startswith("sqlite"):
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")  # persists in the file
    with engine.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(tenants.insert(), [{"id": f"t{t}", "catalog_revision": t + 1}
                                        for t in range(TENANTS)])  # fmt: skip
        conn.execute(api_keys.insert(), [
            {"id": f"key_{t}", "tenant_id": f"t{t}", "secret_hash": sha(f"secret_{t}"),
             "scope": "check read", "revoked_at": None} for t in range(TENANTS)
        ])  # fmt: skip
        conn.execute(customers.insert(), cust)
        conn.execute(grants.insert(), grs)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()


LUA = """
local n, T, C, F = 0
function setup(thread) n = n + 1; thread:set("tid", n) end
function init(args)
  T, C, F = tonumber(args[1]), tonumber(args[2]), tonumber(args[3])
  math.randomseed(os.time() * 10 + tid)
end
function request()
  local t = math.random(0, T - 1)
  local body = string.format('{"customer":"ext_%d_%d","feature":"f%d"}',
                             t, math.random(0, C - 1), math.random(0, F - 1))
  return wrk.format("POST", "/v1/check", {["Content-Type"] = "application/json",
                    ["Authorization"] = "Bearer key_" .. t .. ".secret_" .. t}, body)
end
"""


class Result(NamedTuple):
    rps: float
    p50: float  # ms
    p99: float  # ms
    bad: int  # non-2xx responses + socket errors
    srv: float  # CPU of the uvicorn process (all threads), % of one core
    db: float  # CPU of this server's PostgreSQL backends, % of one core
    foreign: float  # rest of the machine minus wrk: other sessions' load = noise, % of one core


def proc_cpu(pids: list[int]) -> float:
    """Seconds of CPU (user + system) used so far by these processes."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(f[11]) + int(f[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Seconds of non-idle CPU so far, over all cores."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def wait_quiet(limit_s: float = 120) -> float:
    """Bounded wait until the (shared) machine is nearly idle; returns the last busy %."""
    deadline = time.monotonic() + limit_s
    while True:
        b0 = machine_busy()
        time.sleep(1)
        busy = (machine_busy() - b0) * 100
        if busy < 20 or time.monotonic() > deadline:
            return busy


def to_ms(v: str) -> float:
    num, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", v).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(srv: int, db: list[int], port: int, secs: int, lua: Path | None = None) -> Result:
    """GET /empty, or with the Lua script POST /v1/check for random keys and customers."""
    url = f"http://127.0.0.1:{port}/empty"
    lua_args = ["-s", str(lua), url, "--", str(TENANTS), str(PER_TENANT), str(FEATURES)]
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = (time.monotonic(), proc_cpu([srv]), proc_cpu(db), machine_busy(),
              child.ru_utime + child.ru_stime)  # fmt: skip
    out = subprocess.run([*WRK, f"-d{secs}s", *(lua_args if lua else [url])], check=True,
                         capture_output=True, text=True, timeout=secs + 60).stdout  # fmt: skip
    child = resource.getrusage(resource.RUSAGE_CHILDREN)  # now includes this wrk
    after = (time.monotonic(), proc_cpu([srv]), proc_cpu(db), machine_busy(),
             child.ru_utime + child.ru_stime)  # fmt: skip
    wall, s, d, busy, w = (a - b for a, b in zip(after, before, strict=True))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errs = re.findall(r"(?:Non-2xx or 3xx responses:|connect|read|write|timeout) (\d+)", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = [100 * x / wall for x in (s, d, busy - s - d - w)]
    return Result(rps, to_ms(lat["50"]), to_ms(lat["99"]), sum(map(int, errs)), *pct)


def start_server(mode: str, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        proc = subprocess.Popen([sys.executable, __file__, "--serve", mode, url, str(port)],
                                stdout=fh, stderr=subprocess.STDOUT)  # fmt: skip
    base, body = f"http://127.0.0.1:{port}", {"customer": "ext_3_7", "feature": "f1"}
    try:
        for _ in range(150):  # up to ~15 s to come up
            if proc.poll() is not None:
                raise RuntimeError(f"server died: {log.read_text()[-2000:]}")
            try:
                httpx.get(f"{base}/empty", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        ok, bad = [httpx.post(f"{base}/v1/check", json=body, headers={"Authorization": a})
                   for a in ("Bearer key_3.secret_3", "Bearer key_3.wrong")]  # fmt: skip
        if ok.status_code != 200 or ok.json()["catalog_revision"] != 4 or bad.status_code != 401:
            raise RuntimeError(f"sanity check failed: {ok.status_code} {ok.text} {bad.status_code}")
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def pg_admin(sql: str) -> list[Any]:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        cur = conn.execute(sql)
        return [r[0] for r in cur.fetchall()] if cur.description else []


def measure(mode: str, url: str, port: int, tmp: Path, secs: int) -> tuple[Result, Result]:
    """One combo: fresh server, warmup, then /empty and /v1/check for `secs` seconds each."""
    proc = start_server(mode, url, port, tmp / "server.log")
    try:
        wrk(proc.pid, [], port, 3, tmp / "check.lua")  # warmup: pool, prepared statements
        wrk(proc.pid, [], port, 2)
        db = pg_admin(f"SELECT pid FROM pg_stat_activity WHERE datname = '{PG_DB}'")
        db = db if url.startswith("postgresql") else []  # pool is fixed-size: no churn
        return wrk(proc.pid, db, port, secs, tmp / "check.lua"), wrk(proc.pid, db, port, secs)
    finally:
        stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured wrk run")
    ap.add_argument("--core-only", action="store_true", help="only the 4 requested combos")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sva-"))
    pg, lite = f"postgresql+{{}}://postgres@127.0.0.1:5432/{PG_DB}", f"{tmp / 'bench.db'}"
    combos = [  # label, mode, url, one of the 4 requested
        ("async sqlite aiosqlite", "async", f"sqlite+aiosqlite:///{lite}", True),
        ("sync  sqlite pysqlite", "sync", f"sqlite+pysqlite:///{lite}", True),
        ("async pg     asyncpg", "async", pg.format("asyncpg"), True),
        ("sync  pg     psycopg", "sync", pg.format("psycopg"), True),
        ("sync1 sqlite pysqlite", "sync1", f"sqlite+pysqlite:///{lite}", False),
        ("sync1 pg     psycopg", "sync1", pg.format("psycopg"), False),
        ("async pg     psycopg", "async", pg.format("psycopg"), False),
    ]
    combos = [c for c in combos if c[3] or not args.core_only]
    (tmp / "check.lua").write_text(LUA)
    results: dict[str, list[tuple[Result, Result]]] = {c[0]: [] for c in combos}
    try:
        pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        pg_admin(f"CREATE DATABASE {PG_DB}")
        seed(pg.format("psycopg"))
        seed(f"sqlite+pysqlite:///{lite}")
        for rnd in range(args.rounds):
            for label, mode, url, _ in combos:
                for attempt in range(3):  # redo (bounded) when other sessions loaded the box
                    wait_quiet()
                    check, empty = measure(mode, url, 8700 + rnd, tmp, args.duration)
                    noise = max(check.foreign, empty.foreign)
                    print(f"round {rnd + 1}.{attempt}: {label:22} check {check.rps:5.0f} rps,"
                          f" empty {empty.rps:5.0f} rps, foreign CPU {noise:3.0f}%",
                          flush=True)  # fmt: skip
                    if noise < 25:
                        break
                results[label].append((check, empty))
    finally:
        pg_admin(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(results)


def med(runs: list[tuple[Result, Result]], field: str, which: int = 0) -> float:
    return statistics.median(float(getattr(r[which], field)) for r in runs)


def print_table(results: dict[str, list[tuple[Result, Result]]]) -> None:
    """Medians over rounds; each round's check rps in brackets when there were several."""
    head = ["mode db driver", "check rps", "p50 ms", "p99 ms", "app CPU%", "PG CPU%",
            "foreign CPU%", "empty rps", "check/empty", "errors"]  # fmt: skip
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for label, runs in results.items():
        each = f" ({', '.join(f'{c.rps:.0f}' for c, _ in runs)})" if len(runs) > 1 else ""
        cells = [label, f"{med(runs, 'rps'):.0f}{each}", f"{med(runs, 'p50'):.1f}",
                 f"{med(runs, 'p99'):.1f}", f"{med(runs, 'srv'):.0f}", f"{med(runs, 'db'):.0f}",
                 f"{med(runs, 'foreign'):.0f}", f"{med(runs, 'rps', 1):.0f}",
                 f"{statistics.median(c.rps / e.rps for c, e in runs):.2f}",
                 str(sum(c.bad + e.bad for c, e in runs))]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        import uvicorn

        mode, url, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
        uvicorn.run(build_app(mode, url), host="127.0.0.1", port=port, loop="uvloop",
                    http="httptools", log_level="warning", access_log=False)  # fmt: skip
    else:
        main()
