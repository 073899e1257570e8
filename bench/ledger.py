"""Ledger transfers with balance rules on PostgreSQL at 32 concurrent clients, against a
bare INSERT of the same rows in the same run.

Issue 11's benchmark. Goals: at least 1,000 transfers/s on one hot account and 3,000/s
spread over 1,000 accounts, with `verify` finding 0 violations after each phase.

1. Setup (not timed): a scratch PostgreSQL database (`billfold_bench_<random>` next to the
   admin database in `BILLFOLD_BENCH_POSTGRES_URL`, default
   `postgresql://postgres@127.0.0.1:5432/test`), migrated; one tenant; a `Database` with a
   pool for 32 clients (`pool_size=32`) and the event-log chain key, as the app opens it.
   Accounts in USD: `equity` (no rule), `hot` and 1,000 `spread-NNNN` wallets (liability,
   `debits_must_not_exceed_credits`), 4 `dest-N` accounts (liability, no rule). `hot` is
   funded by one transfer from `equity`, the 1,000 wallets by one linked batch.
2. Hot: 32 asyncio tasks, each sending one transfer at a time through the group commit
   (`TransferBatcher.transfer`, the path `POST /v1/ledger/transfers` takes; decision 0040)
   and awaiting its own answer, from `hot` to one of the 4 `dest-N`, 1..100 minor units,
   unique ids, until `--transfers` are done or `--seconds` pass. `--alone` sends each
   transfer in a transaction of its own instead (`Database.transaction()` +
   `ledger.transfer`, the in-process path). Meanwhile a separate connection reads `hot`'s
   stored balances every 20 ms.
3. Spread: the same, each transfer between a random pair of the 1,000 wallets.
4. Baseline: the same 32 clients, through the same `Database`, one `INSERT` of one
   transfer-shaped row per transaction into `bench_transfers`, a table made
   `LIKE ledger_transfers INCLUDING ALL` (same columns, primary and unique keys and
   indexes; no foreign keys; the ledger's triggers fire on UPDATE and DELETE only, so
   none would on insert). So the ratio is what the ledger's rules cost over the database's
   own floor for a one-row write transaction through the same stack. Also, for scale, the
   same inserts by raw asyncpg (no SQLAlchemy).
5. After each phase, in a transaction of its own: `verify(session, tenant_id)` must find
   0 violations; the tenant's transfer count must equal the funding transfers plus those
   the clients saw succeed; `hot`'s balance must be its funding less what the clients saw
   moved, and no sample of it may have been below zero.

Prints transfers/s per phase, baseline rows/s, the ratios, the CPU this process and the
database's backends used, verify's result and PASS/FAIL against 1,000/s and 3,000/s. Exits 1
when a check of step 5 fails or a transfer was refused; a missed goal does not change it.

    .venv/bin/python bench/ledger.py               # 20,000 transfers a phase (cap 30 s)
    .venv/bin/python bench/ledger.py --quick       # 2,000 a phase
    .venv/bin/python bench/ledger.py --profile     # + statements per transfer, lock waits
    .venv/bin/python bench/ledger.py --alone       # one transaction per transfer
    .venv/bin/python bench/ledger.py --in-flight 2 # groups in flight per tenant

`--profile` counts the SQL statements each transfer sends (by kind), times them, and samples
`pg_stat_activity` for backends waiting on locks; its figures are a little slower.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check as common
from billfold.kit import eventlog
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.kit.errors import BillfoldError
from billfold.kit.migrate import upgrade
from billfold.ledger import service as ledger
from billfold.ledger.batcher import TransferBatcher
from billfold.ledger.records import Account, NewTransfer
from billfold.ledger.verify import Verification, verify
from billfold.tenants import service as tenants

ADMIN_URL = common.ADMIN_URL
OPERATOR = Actor(kind="operator", id="bench", scope="admin")
CLIENTS = 32
SPREAD_ACCOUNTS = 1_000
DESTINATIONS = 4
RULE = "debits_must_not_exceed_credits"
HOT_FUNDS = 10**12  # minor units: far more than any run moves
WALLET_FUNDS = 10**9
GOAL_HOT = 1_000
GOAL_SPREAD = 3_000
SAMPLE_S = 0.02
BASELINE_TABLE = "bench_transfers"
BASELINE_INSERT = text(
    f"INSERT INTO {BASELINE_TABLE} (tenant_id, id, kind, debit_account_id, "
    "credit_account_id, amount, unit, code, created_at) VALUES (:tenant_id, :id, 'posted', "
    ":debit, :credit, :amount, 'USD', 'bench', :created_at)"
)
RAW_INSERT = (
    f"INSERT INTO {BASELINE_TABLE} (tenant_id, id, kind, debit_account_id, credit_account_id, "
    "amount, unit, code, created_at) VALUES ($1, $2, 'posted', $3, $4, $5, 'USD', 'bench', $6)"
)


@dataclass(frozen=True)
class Setup:
    tenant_id: str
    equity: Account
    hot: Account
    destinations: list[Account]
    wallets: list[Account]


@dataclass
class Phase:
    name: str
    done: int = 0  # transfers (or rows) the clients saw succeed
    moved: Counter[str] = field(default_factory=Counter)  # debits the clients saw, by account
    refused: Counter[str] = field(default_factory=Counter)  # refusals by code
    seconds: float = 0.0
    process_cpu: float = 0.0
    database_cpu: float = 0.0
    others: float = 0.0  # cores other processes used meanwhile
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Checked:
    verification: Verification
    transfers: int  # in the tenant, counted afterwards
    expected: int  # funding + what the clients saw succeed
    hot_available: int  # credits_posted - debits_posted - debits_pending, stored
    hot_expected: int
    lowest_sample: int | None  # the least available balance `hot` was seen with

    @property
    def ok(self) -> bool:
        return (
            self.verification.ok
            and self.transfers == self.expected
            and self.hot_available == self.hot_expected
            and self.hot_available >= 0
            and (self.lowest_sample is None or self.lowest_sample >= 0)
        )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def dsn_of(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


def context(tenant_id: str, correlation: str) -> Context:
    return Context(tenant_id, OPERATOR, correlation, datetime.now(UTC))


# --- setup (not timed) ----------------------------------------------------------------------


async def set_up(database: Database, dsn: str) -> Setup:
    async with database.transaction() as session:
        tenant = await tenants.create_tenant(session, "bench", "Bench tenant", datetime.now(UTC))
    ctx = context(tenant.id, "bench-setup")
    async with database.transaction() as session:

        async def make(code: str, type: Any, rule: Any = None) -> Account:
            return await ledger.create_account(
                session, ctx, code=code, type=type, unit="USD", rule=rule
            )

        equity = await make("equity", "equity")
        hot = await make("hot", "liability", RULE)
        destinations = [await make(f"dest-{n}", "liability") for n in range(DESTINATIONS)]
        wallets = [await make(f"spread-{n:04d}", "liability", RULE) for n in range(SPREAD_ACCOUNTS)]
    async with database.transaction() as session:
        await ledger.transfer(session, ctx, NewTransfer("fund-hot", equity.id, hot.id, HOT_FUNDS))
    async with database.transaction() as session:
        await ledger.transfer_many(
            session,
            ctx,
            [NewTransfer(f"fund-{w.code}", equity.id, w.id, WALLET_FUNDS) for w in wallets],
        )
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            f"CREATE TABLE {BASELINE_TABLE} (LIKE ledger_transfers INCLUDING ALL)"
        )
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return Setup(tenant.id, equity, hot, destinations, wallets)


async def checkpoint(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


# --- the load -------------------------------------------------------------------------------


async def drive(
    phase: Phase,
    count: int,
    seconds: float,
    database_name: str,
    one: Callable[[int, random.Random], Awaitable[tuple[str, int] | None]],
) -> None:
    """CLIENTS tasks take numbers 0, 1, ... until `count` are taken or `seconds` pass;
    `one(number, rng)` does the work of one and returns (debited account, amount), or None
    when it was refused."""
    taken = 0
    deadline = time.perf_counter() + seconds

    async def client(index: int) -> None:
        nonlocal taken
        rng = random.Random(11_000 + index)
        while taken < count and time.perf_counter() < deadline:
            number = taken
            taken += 1
            started = time.perf_counter()
            try:
                result = await one(number, rng)
            except BillfoldError as error:
                phase.refused[error.code] += 1
                continue
            phase.latencies.append(time.perf_counter() - started)
            phase.done += 1
            if result is not None:
                phase.moved[result[0]] += result[1]

    machine, cpu = common.machine_busy_seconds(), time.process_time()
    backends_before = common.backends_of(database_name)
    started = time.perf_counter()
    await asyncio.gather(*(client(index) for index in range(CLIENTS)))
    phase.seconds = time.perf_counter() - started
    phase.process_cpu = time.process_time() - cpu
    backends_after = common.backends_of(database_name)
    phase.database_cpu = sum(
        spent - backends_before.get(pid, 0.0) for pid, spent in backends_after.items()
    )
    busy = common.machine_busy_seconds() - machine
    phase.others = max(busy - phase.process_cpu - phase.database_cpu, 0.0) / phase.seconds


async def transfers_phase(
    database: Database,
    batcher: TransferBatcher | None,
    setup: Setup,
    name: str,
    count: int,
    seconds: float,
    database_name: str,
    pick: Callable[[random.Random], tuple[Account, Account]],
) -> Phase:
    """Through the group commit (`batcher`), as the API sends them; without one, each
    transfer in a transaction of its own (`--alone`)."""
    phase = Phase(name)
    salt = secrets.token_hex(3)

    async def one(number: int, rng: random.Random) -> tuple[str, int]:
        debit, credit = pick(rng)
        amount = rng.randint(1, 100)
        request = NewTransfer(f"{name}-{salt}-{number}", debit.id, credit.id, amount, code=name)
        ctx = context(setup.tenant_id, request.id)
        if batcher is not None:
            await batcher.transfer(ctx, request)
        else:
            async with database.transaction() as session:
                await ledger.transfer(session, ctx, request)
        return debit.id, amount

    await drive(phase, count, seconds, database_name, one)
    return phase


async def baseline_phase(
    database: Database, setup: Setup, count: int, seconds: float, database_name: str
) -> Phase:
    phase = Phase("baseline")
    salt = secrets.token_hex(3)
    debit, credit = setup.hot.id, setup.destinations[0].id

    async def one(number: int, rng: random.Random) -> None:
        row = {
            "tenant_id": setup.tenant_id,
            "id": f"base-{salt}-{number}",
            "debit": debit,
            "credit": credit,
            "amount": rng.randint(1, 100),
            "created_at": datetime.now(UTC),
        }
        async with database.transaction() as session:
            await session.execute(BASELINE_INSERT, row)

    await drive(phase, count, seconds, database_name, one)
    return phase


async def raw_phase(
    dsn: str, setup: Setup, count: int, seconds: float, database_name: str
) -> Phase:
    phase = Phase("raw asyncpg")
    salt = secrets.token_hex(3)
    debit, credit = setup.hot.id, setup.destinations[0].id
    pool = await asyncpg.create_pool(dsn, min_size=CLIENTS, max_size=CLIENTS)
    try:

        async def one(number: int, rng: random.Random) -> None:
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(
                    RAW_INSERT,
                    setup.tenant_id,
                    f"raw-{salt}-{number}",
                    debit,
                    credit,
                    rng.randint(1, 100),
                    datetime.now(UTC),
                )

        await drive(phase, count, seconds, database_name, one)
    finally:
        await pool.close()
    return phase


class Sampler:
    """Reads `hot`'s stored balances every SAMPLE_S on a connection of its own."""

    def __init__(self, dsn: str, account_id: str) -> None:
        self.dsn, self.account_id = dsn, account_id
        self.lowest: int | None = None
        self.samples = 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                available = await connection.fetchval(
                    "SELECT credits_posted - debits_posted - debits_pending "
                    "FROM ledger_accounts WHERE id = $1",
                    self.account_id,
                )
                self.samples += 1
                self.lowest = available if self.lowest is None else min(self.lowest, available)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), SAMPLE_S)
        finally:
            await connection.close()

    def stop(self) -> None:
        self._stop.set()


async def check_after(
    database: Database, setup: Setup, expected: int, hot_moved: int, lowest: int | None
) -> Checked:
    async with database.transaction(write=False) as session:
        verification = await verify(session, setup.tenant_id)
        row = (
            await session.execute(
                text(
                    "SELECT credits_posted - debits_posted - debits_pending "
                    "FROM ledger_accounts WHERE id = :id"
                ),
                {"id": setup.hot.id},
            )
        ).one()
    return Checked(
        verification,
        verification.transfers,
        expected,
        int(row[0]),
        HOT_FUNDS - hot_moved,
        lowest,
    )


# --- profile --------------------------------------------------------------------------------


class Statements:
    """Counts and times the SQL statements an engine sends, by their first words."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self._started: dict[int, tuple[str, float]] = {}

    def attach(self, database: Database) -> None:
        event.listen(database.engine.sync_engine, "before_cursor_execute", self.before)
        event.listen(database.engine.sync_engine, "after_cursor_execute", self.after)
        event.listen(database.engine.sync_engine, "commit", self.commit)

    def before(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        kind = kind_of(statement)
        self.counts[kind] += 1
        self._started[id(cursor)] = (kind, time.perf_counter())

    def after(self, _conn: Any, cursor: Any, *_args: Any) -> None:
        kind, started = self._started.pop(id(cursor), ("?", time.perf_counter()))
        self.seconds[kind] += time.perf_counter() - started

    def commit(self, _conn: Any) -> None:
        self.counts["COMMIT"] += 1

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()


def kind_of(statement: str) -> str:
    words = statement.split()
    head = " ".join(words[:2]).upper()
    if head.startswith("INSERT INTO"):
        return " ".join(words[:3])
    if words and words[0].upper() in ("UPDATE", "SAVEPOINT", "RELEASE", "ROLLBACK"):
        return " ".join(words[:2]) if words[0].upper() == "UPDATE" else words[0].upper()
    if head.startswith("WITH INSERTED"):
        return "WITH (INSERT INTO ledger_transfers, UPDATE ledger_accounts)"
    lock = " FOR UPDATE" if re.search(r"FOR UPDATE", statement, re.IGNORECASE) else ""
    if lock and "FROM ledger_accounts" in statement:
        found = " (+ stored ids)" if "array_agg" in statement else ""
        return f"SELECT ... FROM ledger_accounts FOR UPDATE{found}"
    match = re.search(r"\bFROM\s+(\w+)", statement, re.IGNORECASE)
    where = " (pending_id)" if "pending_id IN" in statement else ""
    return f"SELECT ... FROM {match.group(1)}{where}{lock}" if match else " ".join(words[:2])


class LockWaits:
    """Samples the scratch database's backends every 10 ms: how many wait on a lock."""

    def __init__(self, dsn: str, database_name: str) -> None:
        self.dsn, self.database_name = dsn, database_name
        self.samples = 0
        self.waiting: Counter[str] = Counter()  # wait event -> backends seen waiting, summed
        self.active = 0  # active backends seen, summed
        self._stop = asyncio.Event()

    async def run(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await connection.fetch(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                    "WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.database_name,
                )
                self.samples += 1
                for row in rows:
                    if row["state"] == "active":
                        self.active += 1
                        if row["wait_event_type"]:
                            self.waiting[f"{row['wait_event_type']}:{row['wait_event']}"] += 1
                    elif row["state"] == "idle in transaction":
                        self.waiting["(idle in transaction: the client's turn)"] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.01)
        finally:
            await connection.close()

    def stop(self) -> None:
        self._stop.set()

    def report(self) -> None:
        if not self.samples:
            return
        print(
            f"      backends of 32 sampled {self.samples} times: on average "
            f"{self.active / self.samples:.1f} running a statement; of all 32, on average:"
        )
        for name, seen in self.waiting.most_common(6):
            print(f"         {seen / self.samples:5.1f}  {name}")


def print_statements(statements: Statements, done: int, seconds: float) -> None:
    total = sum(statements.counts.values())
    print(
        f"      SQL statements: {total / max(done, 1):.1f} per transfer "
        "(client-side time summed over the 32 clients, ms per transfer):"
    )
    for kind, number in statements.counts.most_common():
        spent = statements.seconds.get(kind, 0.0)
        print(
            f"         {number / max(done, 1):5.2f}  {1e3 * spent / max(done, 1):6.2f} ms  {kind}"
        )


# --- the bench ------------------------------------------------------------------------------


async def run(url: str, database_name: str, args: argparse.Namespace) -> bool:
    dsn = dsn_of(url)
    chain_key = eventlog.chain_key(secrets.token_bytes(32))
    database = Database(url, pool_size=CLIENTS)
    database.key_event_log(chain_key)
    groups: list[int] = []
    batcher = (
        None
        if args.alone
        else TransferBatcher(database, in_flight=args.in_flight, on_group=groups.append)
    )
    statements = Statements()
    if args.profile:
        statements.attach(database)
    try:
        setup = await set_up(database, dsn)
        funding = 1 + SPREAD_ACCOUNTS
        # Warm the pool (32 connections) and the caches before any clock starts.
        await baseline_phase(database, setup, CLIENTS * 4, args.seconds, database_name)

        ok = True
        results: dict[str, Phase] = {}
        succeeded = 0

        def pick_hot(rng: random.Random) -> tuple[Account, Account]:
            return setup.hot, rng.choice(setup.destinations)

        def pick_spread(rng: random.Random) -> tuple[Account, Account]:
            debit, credit = rng.sample(setup.wallets, 2)
            return debit, credit

        picks = {"hot": pick_hot, "spread": pick_spread}
        for name in ("hot", "spread"):
            await checkpoint(dsn)
            statements.reset()
            groups.clear()
            sampler = Sampler(dsn, setup.hot.id)
            waits = LockWaits(dsn, database_name)
            watchers = [asyncio.create_task(sampler.run())]
            if args.profile:
                watchers.append(asyncio.create_task(waits.run()))
            pick = picks[name]
            try:
                phase = await transfers_phase(
                    database,
                    batcher,
                    setup,
                    name,
                    args.transfers,
                    args.seconds,
                    database_name,
                    pick,
                )
            finally:
                sampler.stop()
                waits.stop()
                await asyncio.gather(*watchers)
            results[name] = phase
            succeeded += phase.done
            checked = await check_after(
                database,
                setup,
                funding + succeeded,
                results["hot"].moved[setup.hot.id],
                sampler.lowest,
            )
            print_phase(phase, args)
            if groups:
                print(
                    f"      group commit: {len(groups):,} transactions, "
                    f"{sum(groups) / len(groups):.1f} requests each on average, "
                    f"at most {max(groups)}"
                )
            if phase.refused:
                print(f"      refused: {dict(phase.refused)} (none expected: funds are ample)")
            print(
                f"   verify after {name}: {checked.verification.describe()}  "
                f"[0 violations: {verdict(checked.verification.ok)}]"
            )
            if not checked.verification.ok:
                print(f"      {len(checked.verification.violations)} violations")
            print(
                f"   transfers stored {checked.transfers:,} = funding {funding:,} + "
                f"succeeded {succeeded:,}: {verdict(checked.transfers == checked.expected)}; "
                f"hot available {checked.hot_available:,} (expected "
                f"{checked.hot_expected:,}), lowest of {sampler.samples} samples "
                f"{checked.lowest_sample:,}: "
                f"{verdict(checked.hot_available == checked.hot_expected and checked.ok)}"
            )
            ok = ok and checked.ok and not phase.refused
            if args.profile:
                print_statements(statements, phase.done, phase.seconds)
                waits.report()

        await checkpoint(dsn)
        statements.reset()
        base = await baseline_phase(database, setup, args.transfers, args.seconds, database_name)
        results["baseline"] = base
        print_phase(
            base,
            args,
            label=(
                f"baseline: one INSERT into {BASELINE_TABLE} (LIKE ledger_transfers INCLUDING ALL) "
                "per transaction, same Database, 32 clients"
            ),
        )
        if args.profile:
            print_statements(statements, base.done, base.seconds)
        await checkpoint(dsn)
        raw = await raw_phase(dsn, setup, args.transfers, args.seconds, database_name)
        print_phase(raw, args, label="for scale: the same INSERTs by raw asyncpg, 32 clients")
    finally:
        await database.dispose()

    hot, spread = results["hot"], results["spread"]
    print("== summary")
    print(
        f"   hot (1 account):        {hot.rate:8,.0f} transfers/s = {hot.rate / base.rate:.2f}x "
        f"the baseline  [goal >= {GOAL_HOT:,}/s: {verdict(hot.rate >= GOAL_HOT)}]"
    )
    print(
        f"   spread (1,000 accounts): {spread.rate:7,.0f} transfers/s = "
        f"{spread.rate / base.rate:.2f}x the baseline  "
        f"[goal >= {GOAL_SPREAD:,}/s: {verdict(spread.rate >= GOAL_SPREAD)}]"
    )
    print(
        f"   baseline (bare INSERT through the same Database): {base.rate:,.0f} rows/s; "
        f"raw asyncpg: {raw.rate:,.0f} rows/s"
    )
    print(f"   verify 0 violations, counts and hot balance after each phase: {verdict(ok)}")
    return ok


def print_phase(phase: Phase, args: argparse.Namespace, label: str | None = None) -> None:
    lat = sorted(phase.latencies) or [0.0]
    p50 = 1e3 * lat[len(lat) // 2]
    p99 = 1e3 * lat[min(int(len(lat) * 0.99), len(lat) - 1)]
    unit = "rows" if phase.name in ("baseline", "raw asyncpg") else "transfers"
    goal = {"hot": GOAL_HOT, "spread": GOAL_SPREAD}.get(phase.name)
    how = "one transfer per transaction" if args.alone else "through the group commit"
    title = label or f"{phase.name}: 32 clients, one transfer per request, {how}"
    print(f"== {title}")
    mark = f"  [goal >= {goal:,}/s: {verdict(phase.rate >= goal)}]" if goal else ""
    print(f"   {phase.done:,} {unit} in {phase.seconds:.1f}s = {phase.rate:,.0f} {unit}/s{mark}")
    print(
        f"   latency p50 {p50:.1f} ms, p99 {p99:.1f} ms; CPU per {unit[:-1]}: this process "
        f"{1e6 * phase.process_cpu / max(phase.done, 1):,.0f} us, PostgreSQL "
        f"{1e6 * phase.database_cpu / max(phase.done, 1):,.0f} us; other processes used "
        f"{phase.others:.2f} cores meanwhile"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--transfers", type=int, default=20_000, help="per phase")
    parser.add_argument("--seconds", type=float, default=30.0, help="cap per phase")
    parser.add_argument("--quick", action="store_true", help="2,000 transfers a phase")
    parser.add_argument("--profile", action="store_true", help="statements and lock waits")
    parser.add_argument(
        "--alone",
        action="store_true",
        help="each transfer in a transaction of its own, not through the group commit",
    )
    parser.add_argument(
        "--in-flight", type=int, default=None, help="groups in flight (default: the batcher's)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.transfers = min(args.transfers, 2_000)
    if args.transfers < CLIENTS or args.seconds <= 0:
        parser.error(f"--transfers must be at least {CLIENTS} and --seconds positive")
    load1, load5, _ = os.getloadavg()
    print("Billfold ledger bench")
    print(
        f"   commit {common.git_commit()}, {os.cpu_count()} cores, "
        f"load average {load1:.2f} / {load5:.2f}"
    )
    try:
        with common.scratch_postgres(ADMIN_URL) as (url, label, _postgres):
            upgrade(url)
            print(
                f"   {label}; {args.transfers:,} a phase (cap {args.seconds:.0f} s)"
                f"{'; under --profile' if args.profile else ''}"
            )
            ok = asyncio.run(run(url, str(make_url(url).database), args))
    except common.BenchError as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
