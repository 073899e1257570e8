"""Period close: 10,000 monthly `pro` subscriptions with usage closed and finalized in one
run, against reading the same usage with one GROUP BY query (the floor).

Issue 10's benchmark. Goal: all invoices finalized within 60 seconds on this machine, and
within 3x the floor.

1. Seeding (not timed), once, into a scratch PostgreSQL database (`billfold_bench_<random>`
   next to the admin database in `BILLFOLD_BENCH_POSTGRES_URL`, default
   `postgresql://postgres@127.0.0.1:5432/test`), migrated: one tenant with the tests' plans
   (tests/fixtures/plans.yaml), N customers each with a `pro` subscription (USD monthly, a
   graduated price on the `ai_tokens` meter) created through
   `billfold.subscriptions.service.create` one month before now, their first invoices
   finalized by a period-close run at that moment (as last month's run would have) and
   marked paid (so the timed run closes a period and duns nothing), and
   ~100 `ai.tokens` events per customer inside the period, by COPY (tokens 1..3,000 each,
   so most customers go past the 100,000 the plan includes). Then VACUUM ANALYZE.
2. Each round works on a copy of that database (`CREATE DATABASE ... TEMPLATE`), after a
   CHECKPOINT. The floor: `SELECT customer, sum((properties->>'tokens')::numeric) ...
   GROUP BY customer` over the period, through the same `Database` (SQLAlchemy on asyncpg)
   the run uses, rows fetched; once to warm the cache, then the median of 3. Then
   `billfold.billing.run.run(database, now, now=now, settings=CloseSettings(grace=0))`,
   in-process, timed from the call to its return: it closes every period and finalizes
   every draft (pool of 2 connections, as `billfold invoices run` opens).
3. Checked afterwards, else the round fails: no failures in the report; exactly N cycle
   invoices, all finalized; every finalized number of the tenant gapless per year; each
   cycle invoice's usage line is the floor's sum for its customer, rated by the plan's
   price.

Prints subscriptions, events, close+finalize seconds (and the two phases), invoices/s, the
CPU this process and the run's PostgreSQL backends used (and other processes meanwhile: the
machine may be shared), floor seconds, the ratio run/floor, and PASS/FAIL against 60 s and
3x; with several rounds, the medians. Seeding 10,000 takes about 6 minutes, each round as
long as the run plus a copy of the database.

    .venv/bin/python bench/period_close.py                     # 10,000 x 100, 3 rounds
    .venv/bin/python bench/period_close.py --subscriptions 1000 --rounds 1   # quicker
    .venv/bin/python bench/period_close.py --subscriptions 1000 --profile /tmp/close.prof

`--profile FILE` runs one round under cProfile (its figures are slower, and say so), writes
the stats to FILE, prints the top functions, and counts the SQL statements the run sent,
per subscription, by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import random
import re
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check as common
from billfold.billing.close import CloseSettings
from billfold.billing.run import Step, run
from billfold.catalog import catalog as catalogs
from billfold.catalog import plansfile
from billfold.catalog import service as catalog_service
from billfold.kit import eventlog
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.kit.migrate import upgrade
from billfold.money import to_minor
from billfold.pricing import rate
from billfold.subscriptions import service as subscriptions
from billfold.subscriptions.service import NewSubscription, price_of
from billfold.tenants import service as tenants

PLANS = common.ROOT / "tests" / "fixtures" / "plans.yaml"
ADMIN_URL = common.ADMIN_URL
OPERATOR = Actor(kind="operator", id="bench", scope="admin")
SEED_BATCH = 100  # subscriptions created per transaction while seeding
COPY_BATCH = 200_000  # events per COPY
GOAL_SECONDS = 60.0
GOAL_RATIO = 3.0
FLOOR = text(
    "SELECT customer, sum((properties->>'tokens')::numeric) AS tokens FROM usage_events "
    "WHERE tenant_id = :tenant AND type = 'ai.tokens' "
    "AND occurred_at >= :start AND occurred_at < :end GROUP BY customer"
)


@dataclass(frozen=True)
class Seeded:
    tenant_id: str
    start: datetime  # the subscriptions' start: the closed period is [start, end)
    end: datetime
    now: datetime  # the moment of the timed run
    events: int
    seconds: float


@dataclass(frozen=True)
class Round:
    seconds: float  # close + finalize
    close: float  # the close phase of it
    finalize: float  # the finalize phase of it
    floor: float  # median of 3
    invoices: int
    process_cpu: float  # CPU seconds of this process during the run
    database_cpu: float  # CPU seconds of the run's PostgreSQL backends
    others: float  # cores other processes used meanwhile

    @property
    def rate(self) -> float:
        return self.invoices / self.seconds

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def month_before(moment: datetime) -> datetime:
    """The same instant a calendar month earlier, the day clamped to the month's end."""
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    for day in range(moment.day, 27, -1):
        try:
            return moment.replace(year=year, month=month, day=day)
        except ValueError:
            continue
    return moment.replace(year=year, month=month, day=min(moment.day, 28))


def progress(message: str, *, done: bool = False) -> None:
    """A progress line, rewritten in place on a terminal; elsewhere only the last one."""
    if sys.stdout.isatty():
        print(f"\r   {message}", end="\n" if done else "", flush=True)
    elif done:
        print(f"   {message}", flush=True)


def database_for(url: str, chain_key: bytes) -> Database:
    database = Database(url, pool_size=2)  # as `billfold invoices run` opens it
    database.key_event_log(chain_key)
    return database


def dsn_of(url: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", url)


# --- seeding (not timed) --------------------------------------------------------------------


async def seed(url: str, chain_key: bytes, count: int, events_per: int) -> Seeded:
    started = time.perf_counter()
    now = datetime.now(UTC).replace(microsecond=0)
    start = month_before(now)
    database = database_for(url, chain_key)
    try:
        async with database.transaction() as session:
            tenant = await tenants.create_tenant(session, "bench", "Bench tenant", start)
            ctx = Context(tenant.id, OPERATOR, "bench-seed", start)
            await catalog_service.apply(session, ctx, plansfile.load(PLANS))
        tenant_id = tenant.id
        end: datetime | None = None
        for first in range(0, count, SEED_BATCH):
            async with database.transaction() as session:
                ctx = Context(tenant_id, OPERATOR, f"bench-seed-{first}", start)
                catalog = await catalogs.current(session, tenant_id)
                for number in range(first, min(first + SEED_BATCH, count)):
                    made = await subscriptions.create(
                        session, ctx, catalog, customer_name(number), NewSubscription(plan="pro")
                    )
                    end = made.current_period_ends_at
            so_far = min(first + SEED_BATCH, count)
            progress(f"seeding: {so_far:,} subscriptions", done=so_far == count)
        if end is None or end > now:
            raise common.BenchError(f"the first period ends at {end}, after {now}")
        # Last month's run: the first invoices (billed in advance) are finalized at the start.
        report = await run(database, start, now=start, settings=CloseSettings(grace=timedelta(0)))
        if report.failed or report.finalized != count:
            raise common.BenchError(f"finalizing the first invoices: {report}")
    finally:
        await database.dispose()
    events = await copy_events(dsn_of(url), tenant_id, count, events_per, start, end)
    connection = await asyncpg.connect(dsn_of(url))
    try:
        # The customers paid those first invoices: this run closes a period, it does not
        # dun a month of unpaid ones.
        await connection.execute(
            "UPDATE invoices SET status = 'paid', paid_minor = total_minor, paid_at = $1 "
            "WHERE status = 'open'",
            start,
        )
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return Seeded(tenant_id, start, end, now, events, time.perf_counter() - started)


def customer_name(number: int) -> str:
    return f"c{number:06d}"


async def copy_events(
    dsn: str, tenant_id: str, count: int, events_per: int, start: datetime, end: datetime
) -> int:
    """`events_per` ai.tokens events per customer at random instants of [start, end)."""
    rng = random.Random(20_260_601)
    span = (end - start).total_seconds()
    salt = secrets.token_hex(3)
    columns = common.USAGE_EVENT_COLUMNS

    def records() -> Iterator[tuple[Any, ...]]:
        for number in range(count):
            customer = customer_name(number)
            for index in range(events_per):
                at = start + timedelta(seconds=rng.uniform(0, span))
                at = min(at.replace(microsecond=0), end - timedelta(seconds=1))
                properties = {"tokens": rng.randint(1, 3_000), "model": rng.choice(MODELS)}
                yield (
                    f"use_bench{salt}{number:06d}{index:05d}",
                    tenant_id,
                    f"bench-{customer}-{index}",
                    customer,
                    "ai.tokens",
                    None,
                    None,
                    at,
                    at,
                    json.dumps(properties, separators=(",", ":")),
                )

    connection = await asyncpg.connect(dsn)
    copied = 0
    try:
        batch: list[tuple[Any, ...]] = []
        for record in records():
            batch.append(record)
            if len(batch) == COPY_BATCH:
                await connection.copy_records_to_table(
                    "usage_events", records=batch, columns=columns
                )
                copied += len(batch)
                batch = []
                progress(f"seeding: {copied:,} events")
        if batch:
            await connection.copy_records_to_table("usage_events", records=batch, columns=columns)
            copied += len(batch)
        progress(f"seeding: {copied:,} events", done=True)
    finally:
        await connection.close()
    return copied


MODELS = ("gpt-4o", "o3", "claude")


# --- one round ------------------------------------------------------------------------------


async def floor_once(database: Database, seeded: Seeded) -> tuple[float, dict[str, Decimal]]:
    started = time.perf_counter()
    async with database.transaction(write=False) as session:
        rows = (
            await session.execute(
                FLOOR, {"tenant": seeded.tenant_id, "start": seeded.start, "end": seeded.end}
            )
        ).all()
    elapsed = time.perf_counter() - started
    return elapsed, {row.customer: Decimal(row.tokens) for row in rows}


class Statements:
    """Counts the SQL statements an engine sends, by their first words."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.counts[kind_of(statement)] += 1


def kind_of(statement: str) -> str:
    words = statement.split()
    head = " ".join(words[:2]).upper()
    if head.startswith("INSERT INTO") or head.startswith("DELETE FROM"):
        return " ".join(words[:3])
    if words and words[0].upper() in ("UPDATE", "SAVEPOINT", "RELEASE"):
        return " ".join(words[:2]) if words[0].upper() == "UPDATE" else words[0].upper()
    match = re.search(r"\bFROM\s+(\w+)", statement, re.IGNORECASE)
    lock = " FOR UPDATE" if re.search(r"FOR UPDATE", statement, re.IGNORECASE) else ""
    return f"SELECT ... FROM {match.group(1)}{lock}" if match else " ".join(words[:2])


async def one_round(
    url: str, chain_key: bytes, seeded: Seeded, count: int, profile: Path | None
) -> Round:
    database = database_for(url, chain_key)
    try:
        await floor_once(database, seeded)  # warms the cache
        floors = []
        floor: dict[str, Decimal] = {}
        for _ in range(3):
            elapsed, floor = await floor_once(database, seeded)
            floors.append(elapsed)
        await database.dispose()  # the run starts with an empty pool, as a CLI run does
        database = database_for(url, chain_key)

        statements = Statements()
        if profile:
            event.listen(database.engine.sync_engine, "before_cursor_execute", statements)
        close_done: list[float] = []

        def on_step(step: Step) -> None:
            if step.phase == "close":
                close_done[:] = [time.perf_counter()]

        profiler = cProfile.Profile() if profile else None
        machine, cpu = common.machine_busy_seconds(), time.process_time()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        report = await run(
            database,
            seeded.now,
            now=seeded.now,
            settings=CloseSettings(grace=timedelta(0)),
            on_step=on_step,
        )
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        backends = sum(common.backends_of(make_url(url).database or "").values())
        others = max(common.machine_busy_seconds() - machine - cpu - backends, 0.0) / elapsed
        close = (close_done[0] if close_done else started) - started
        if report.failed:
            raise common.BenchError(f"{len(report.failed)} failed, the first: {report.failed[0]}")
        if (report.closed, report.invoices) != (count, count):
            raise common.BenchError(f"the run closed {report}; expected {count} invoices")
        await verify(database, seeded, count, floor)
        if profiler and profile:
            profiler.dump_stats(profile)
            print_profile(profile, statements, count)
        return Round(
            elapsed,
            close,
            elapsed - close,
            statistics.median(floors),
            count,  # verified above: N cycle invoices, all finalized
            cpu,
            backends,
            others,
        )
    finally:
        await database.dispose()


async def verify(database: Database, seeded: Seeded, count: int, floor: dict[str, Decimal]) -> None:
    """N cycle invoices, all finalized, numbers gapless, usage lines equal to the floor."""
    async with database.transaction(write=False) as session:
        invoices = (
            await session.execute(
                text(
                    "SELECT i.reason, i.status, i.number, c.external_id FROM invoices i "
                    "JOIN customers c ON c.id = i.customer_id WHERE i.tenant_id = :tenant"
                ),
                {"tenant": seeded.tenant_id},
            )
        ).all()
        usage = (
            await session.execute(
                text(
                    "SELECT c.external_id, l.quantity, l.amount_minor FROM invoice_lines l "
                    "JOIN invoices i ON i.id = l.invoice_id JOIN customers c "
                    "ON c.id = i.customer_id WHERE i.tenant_id = :tenant "
                    "AND i.reason = 'subscription_cycle' AND l.kind = 'usage'"
                ),
                {"tenant": seeded.tenant_id},
            )
        ).all()
        catalog = await catalogs.current(session, seeded.tenant_id)
    cycle = [row for row in invoices if row.reason == "subscription_cycle"]
    problems = []
    if len(cycle) != count:
        problems.append(f"{len(cycle)} cycle invoices, not {count}")
    if any(row.status not in ("open", "paid") or row.number is None for row in cycle):
        problems.append("a cycle invoice is not finalized")
    by_year: dict[str, list[int]] = {}
    for row in invoices:
        if row.number is not None:
            _prefix, year, serial = row.number.split("-")
            by_year.setdefault(year, []).append(int(serial))
    for year, serials in by_year.items():
        if sorted(serials) != list(range(1, len(serials) + 1)):
            problems.append(f"the numbers of {year} have gaps or repeats")
    price = price_of(catalog.require_plan("pro"), "USD", "month").usage["ai_tokens"]
    lines = {row.external_id: row for row in usage}
    if set(lines) != set(floor) or len(usage) != len(lines):
        problems.append(f"{len(usage)} usage lines for {len(floor)} customers with usage")
    wrong = [
        customer
        for customer, tokens in floor.items()
        if customer in lines
        and (
            Decimal(lines[customer].quantity) != tokens
            or lines[customer].amount_minor != to_minor(rate(price, tokens), "USD")
        )
    ]
    if wrong:
        problems.append(f"{len(wrong)} usage lines differ from the floor, e.g. {wrong[0]}")
    if problems:
        raise common.BenchError("; ".join(problems))


def print_profile(path: Path, statements: Statements, count: int) -> None:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("cumulative").print_stats(45)
    print(out.getvalue())
    total = sum(statements.counts.values())
    print(f"   SQL statements sent: {total:,} = {total / count:.1f} per subscription")
    for kind, number in statements.counts.most_common():
        print(f"      {number / count:6.2f}  {kind}")


# --- the bench ------------------------------------------------------------------------------


def clone(admin_url: str, template: str) -> tuple[str, str]:
    """A copy of the seeded database for one round, its writes checkpointed; (url, name)."""
    name = f"billfold_bench_{secrets.token_hex(4)}"
    asyncio.run(common._admin_execute(admin_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    asyncio.run(common._admin_execute(url, "CHECKPOINT"))
    return url, name


def drop(admin_url: str, name: str) -> None:
    asyncio.run(common._admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--events-per", type=int, default=100, help="usage events per customer")
    parser.add_argument("--rounds", type=int, default=3, help="each on a fresh copy of the seed")
    parser.add_argument("--profile", type=Path, help="one round under cProfile; stats to FILE")
    args = parser.parse_args(argv)
    if args.subscriptions < 1 or args.events_per < 1 or args.rounds < 1:
        parser.error("--subscriptions, --events-per and --rounds must be at least 1")
    rounds_wanted = 1 if args.profile else args.rounds
    chain_key = eventlog.chain_key(secrets.token_bytes(32))
    load1, load5, _ = os.getloadavg()
    print("Billfold period-close bench")
    print(
        f"   commit {common.git_commit()}, {os.cpu_count()} cores, "
        f"load average {load1:.2f} / {load5:.2f}"
    )
    rounds: list[Round] = []
    try:
        with common.scratch_postgres(ADMIN_URL) as (url, label, _postgres):
            upgrade(url)
            print(f"== seeding {label}")
            seeded = asyncio.run(seed(url, chain_key, args.subscriptions, args.events_per))
            template = str(make_url(url).database)
            print(
                f"   {args.subscriptions:,} subscriptions, {seeded.events:,} events in "
                f"[{seeded.start:%Y-%m-%d %H:%M}, {seeded.end:%Y-%m-%d %H:%M}), "
                f"seeded in {seeded.seconds:.0f}s"
            )
            for number in range(1, rounds_wanted + 1):
                copy_url, name = clone(ADMIN_URL, template)
                try:
                    result = asyncio.run(
                        one_round(copy_url, chain_key, seeded, args.subscriptions, args.profile)
                    )
                finally:
                    drop(ADMIN_URL, name)
                rounds.append(result)
                print_round(f"round {number}", result, args.subscriptions, seeded.events)
    except common.BenchError as error:
        print(f"\nbench failed: {error}", file=sys.stderr)
        return 1
    if args.profile:
        print("   (under cProfile: these figures are slower than a plain run's)")
    if len(rounds) > 1:
        median = Round(
            statistics.median(r.seconds for r in rounds),
            statistics.median(r.close for r in rounds),
            statistics.median(r.finalize for r in rounds),
            statistics.median(r.floor for r in rounds),
            rounds[0].invoices,
            statistics.median(r.process_cpu for r in rounds),
            statistics.median(r.database_cpu for r in rounds),
            statistics.median(r.others for r in rounds),
        )
        print_round(f"medians of {len(rounds)} rounds", median, args.subscriptions, seeded.events)
        ratio = statistics.median(r.ratio for r in rounds)
        print(f"   ratio, median of the rounds' ratios: {ratio:.1f}x")
    return 0


def print_round(title: str, result: Round, count: int, events: int) -> None:
    print(f"== {title}: {count:,} subscriptions, {events:,} events")
    print(
        f"   close + finalize: {result.seconds:.1f}s (close {result.close:.1f}s, "
        f"finalize {result.finalize:.1f}s) = {result.rate:,.0f} invoices/s  "
        f"[goal <= {GOAL_SECONDS:.0f}s: {verdict(result.seconds <= GOAL_SECONDS)}]"
    )
    print(
        f"   CPU: this process {result.process_cpu:.1f}s, PostgreSQL backends "
        f"{result.database_cpu:.1f}s; other processes used {result.others:.2f} cores meanwhile"
    )
    print(f"   floor (one GROUP BY of the same usage): {result.floor:.2f}s")
    print(
        f"   ratio run/floor = {result.ratio:.1f}x  "
        f"[goal <= {GOAL_RATIO:.0f}x: {verdict(result.ratio <= GOAL_RATIO)}]"
    )


if __name__ == "__main__":
    sys.exit(main())
