"""The async event store's own cost: durable accepts per second with group commit, against a
baseline of one commit per accept with the same durability, and a drain (claim + complete).

Each store kind runs in alternating rounds with its baseline in the same process:
- SQLite, synchronous = FULL: ``SqliteStore`` against a plain sqlite3 loop in a thread doing one
  INSERT and one COMMIT per event (WAL, FULL), the way a store without batching writes;
- PostgreSQL: ``PostgresStore`` against asyncpg with a pool of as many connections as there are
  concurrent accepters, one autocommitted INSERT each (PostgreSQL's own commit sharing still
  applies to the baseline).
Reported: medians over the rounds of accepts/s at the given concurrency, the ratio store/baseline,
the p50 of one accept alone (c=1: what a 202 would wait for), and claim-and-complete events/s.

Usage: python bench/async_store.py [--events 3000] [--concurrency 64] [--rounds 3]
       [--postgres postgresql://postgres@127.0.0.1:5432]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import uvloop
from harness import table

from router.asyncq.postgres import PostgresStore
from router.asyncq.sqlite import SqliteStore
from router.asyncq.store import EventStore, NewEvent
from router.intake.invocation import new_request_id

PAYLOAD = b'{"order": 17, "items": [1, 2, 3], "note": "a small async event"}'


def new_event() -> NewEvent:
    now = time.time()
    return NewEvent(new_request_id(), "noop", PAYLOAD, "event", now, now)


async def concurrently(accept: Callable[[NewEvent], Awaitable[None]], n: int, concurrency: int) -> float:
    """Accepts per second, ``concurrency`` accepters at a time, ``n`` in all."""
    events = [new_event() for _ in range(n)]
    queue = iter(events)

    async def accepter() -> None:
        for e in queue:
            await accept(e)

    start = time.perf_counter()
    await asyncio.gather(*(accepter() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def one_at_a_time_p50(store: EventStore, n: int = 200) -> float:
    times = []
    for _ in range(n):
        e = new_event()
        start = time.perf_counter()
        await store.accept(e)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


async def drain(store: EventStore) -> float:
    """Claim and complete everything stored, 100 at a time: events per second."""
    done, start = 0, time.perf_counter()
    while claims := await store.claim(now=time.time() + 1, limit=100, lease_s=60):
        await asyncio.gather(*(store.complete(c) for c in claims))
        done += len(claims)
    return done / (time.perf_counter() - start)


class SqliteBaseline:
    """One INSERT and one COMMIT per accept, in a thread, with the store's own settings."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS e (request_id TEXT PRIMARY KEY, function TEXT, "
                          "payload BLOB, source TEXT, received_at REAL, due_at REAL)")
        self.lock = asyncio.Lock()  # one writer, as SQLite allows

    def _write(self, e: NewEvent) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("INSERT INTO e VALUES (?, ?, ?, ?, ?, ?)",
                          (e.request_id, e.function, e.payload, e.source, e.received_at, e.due_at))
        self.conn.execute("COMMIT")

    async def accept(self, e: NewEvent) -> None:
        async with self.lock:
            await asyncio.to_thread(self._write, e)


async def bench_sqlite(args: argparse.Namespace, folder: Path) -> list[list[str]]:
    ours, base, p50, drains = [], [], [], []
    for r in range(args.rounds):
        store = SqliteStore(folder / f"store-{r}.sqlite3")
        await store.open()
        baseline = SqliteBaseline(folder / f"baseline-{r}.sqlite3")
        try:
            base.append(await concurrently(baseline.accept, args.events // 4, args.concurrency))
            ours.append(await concurrently(store.accept, args.events, args.concurrency))
            p50.append(await one_at_a_time_p50(store))
            drains.append(await drain(store))
        finally:
            await store.close()
            baseline.conn.close()
    return rows("SQLite (FULL)", ours, base, p50, drains)


async def bench_postgres(args: argparse.Namespace) -> list[list[str]]:
    name = f"headwater_bench_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(f"{args.postgres}/postgres")
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = f"{args.postgres}/{name}"
    ours, base, p50, drains = [], [], [], []
    try:
        pool = await asyncpg.create_pool(dsn, min_size=args.concurrency, max_size=args.concurrency)
        await pool.execute("CREATE TABLE e (request_id TEXT PRIMARY KEY, function TEXT, payload BYTEA, "
                           "source TEXT, received_at DOUBLE PRECISION, due_at DOUBLE PRECISION)")

        async def plain(e: NewEvent) -> None:
            await pool.execute("INSERT INTO e VALUES ($1, $2, $3, $4, $5, $6)", e.request_id,
                               e.function, e.payload, e.source, e.received_at, e.due_at)

        store = PostgresStore(dsn)
        await store.open()
        try:
            for _ in range(args.rounds):
                base.append(await concurrently(plain, args.events // 2, args.concurrency))
                ours.append(await concurrently(store.accept, args.events, args.concurrency))
                p50.append(await one_at_a_time_p50(store))
                drains.append(await drain(store))
        finally:
            await store.close()
            await pool.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
    return rows("PostgreSQL", ours, base, p50, drains)


def rows(label: str, ours: list[float], base: list[float], p50: list[float],
         drains: list[float]) -> list[list[str]]:
    ratio = statistics.median(o / b for o, b in zip(ours, base, strict=True))
    return [[label, f"{statistics.median(ours):,.0f}", f"{statistics.median(base):,.0f}",
             f"{ratio:.1f}", f"{statistics.median(p50):.2f}", f"{statistics.median(drains):,.0f}"]]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="headwater-bench-") as folder:
        results = await bench_sqlite(args, Path(folder))
    results += await bench_postgres(args)
    print(f"{args.events} accepts at c={args.concurrency}, medians of {args.rounds} rounds")
    print(table(["store", "accepts/s, group commit", "accepts/s, commit each", "ratio",
                 "accept p50 ms, c=1", "claim+complete /s"], results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    sys.exit(uvloop.run(main(parser.parse_args())))
