"""Asynchronous invocation end to end: Headwater's Event invokes against Celery with a Redis broker,
on this machine, in the same run, doing the same work.

Throughput: N events, accepted → executed, through a no-op. Headwater: N Event invokes over HTTP
(an aiohttp client, 32 at a time) to a no-op function with 2 warm workers, timed from the first
request until the metering file holds N successful Event records. Celery: N ``delay()`` calls of a
no-op task to a worker with 2 prefork processes, timed from the first call until a Redis counter
the task increments reaches N (the task's one extra step, in place of Headwater's metering
record). Rounds alternate; the ratio (Headwater / Celery) is taken per round, the median reported.
Run with the SQLite store (FULL) and with the PostgreSQL store.

Latency: the 202 alone, one request at a time (c=1), p50 and p99.

Schedule precision: a ``rate(1 second)`` schedule for ``--ticks`` ticks; the handler's start time
(its metering record) minus the scheduled second.

Needs Celery (a bench-only extra: ``pip install -e '.[bench]'``), the machine's Redis on 6379 and
PostgreSQL on 5432.

Usage: python bench/async_invoke.py [--events 5000] [--rounds 3] [--ticks 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

import aiohttp
import asyncpg
import redis
from harness import headwater, noop_function, percentile, table

REDIS = "redis://127.0.0.1:6379/15"
POSTGRES = "postgresql://postgres@127.0.0.1:5432"
WORKERS = 2
SENDERS = 32
NOOP = {"noop/app.py": "def handler(event, context):\n    return None\n",
        "tick/app.py": "def handler(event, context):\n    return None\n"}
CELERY_APP = """
import redis
from celery import Celery

app = Celery("bench", broker="{broker}")
app.conf.update(task_acks_late=False, worker_prefetch_multiplier=64, broker_pool_limit=4)
counter = redis.Redis.from_url("{broker}")


@app.task(ignore_result=True)
def noop(i):
    counter.incr("hw-bench-done")
"""


def async_section(store: str) -> str:
    return f'[async]\nstore = "{store}"\n'


def successes(path: Path, kind: str) -> int:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    return text.count(f'"invocation_type":"{kind}"')


async def send_events(url: str, n: int) -> None:
    queue = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SENDERS)) as session:
        async def sender() -> None:
            for i in queue:
                async with session.post(f"{url}/2015-03-31/functions/noop/invocations",
                                        data=json.dumps({"i": i}),
                                        headers={"X-Amz-Invocation-Type": "Event"}) as r:
                    if r.status != 202:
                        raise RuntimeError(f"Event invoke answered {r.status}: {await r.text()}")
        await asyncio.gather(*(sender() for _ in range(SENDERS)))


def headwater_round(url: str, metering: Path, n: int) -> float:
    before = successes(metering, "Event")
    start = time.perf_counter()
    asyncio.run(send_events(url, n))
    while successes(metering, "Event") < before + n:
        time.sleep(0.01)
    return n / (time.perf_counter() - start)


def latencies_202(url: str, count: int) -> list[float]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port))
    out = []
    for i in range(count):
        start = time.perf_counter()
        conn.request("POST", "/2015-03-31/functions/noop/invocations", body=json.dumps({"i": i}),
                     headers={"X-Amz-Invocation-Type": "Event"})
        response = conn.getresponse()
        response.read()
        out.append((time.perf_counter() - start) * 1000)
        assert response.status == 202
    conn.close()
    return out


@contextlib.contextmanager
def celery_worker() -> Iterator[tuple[object, redis.Redis]]:
    with tempfile.TemporaryDirectory(prefix="hw-celery-") as tmp:
        Path(tmp, "bench_tasks.py").write_text(CELERY_APP.format(broker=REDIS))
        client = redis.Redis.from_url(REDIS)
        client.flushdb()
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "bench_tasks", "worker", "--concurrency",
             str(WORKERS), "--pool", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--loglevel", "WARNING"],
            cwd=tmp, env={**os.environ, "PYTHONPATH": tmp}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        sys.path.insert(0, tmp)
        try:
            import bench_tasks  # type: ignore[import-not-found]

            bench_tasks.noop.delay(-1)  # the worker is up once its first task ran
            deadline = time.monotonic() + 30
            while int(client.get("hw-bench-done") or 0) < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("the Celery worker did not start")
                time.sleep(0.05)
            yield bench_tasks.noop, client
        finally:
            sys.path.remove(tmp)
            proc.terminate()
            proc.wait(30)


def celery_round(task: object, client: redis.Redis, n: int) -> float:
    client.set("hw-bench-done", 0)
    start = time.perf_counter()
    for i in range(n):
        task.delay(i)  # type: ignore[attr-defined]
    while int(client.get("hw-bench-done") or 0) < n:
        time.sleep(0.01)
    return n / (time.perf_counter() - start)


@contextlib.contextmanager
def database() -> Iterator[str]:
    name = f"headwater_bench_{secrets.token_hex(3)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(f"{POSTGRES}/postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def schedule_precision(ticks: int) -> list[float]:
    """Milliseconds from each scheduled second to its handler's start."""
    extra = '[[functions.triggers]]\ntype = "schedule"\nexpression = "rate(1 second)"\n'
    with headwater(textwrap.dedent(noop_function(WORKERS, "tick")) + extra, NOOP,
                   server=async_section("sqlite")) as server:
        time.sleep(ticks + 1.5)
        assert server.folder is not None
        lines = (server.folder / "metering.jsonl").read_text().splitlines()
    starts = [json.loads(line)["start"] for line in lines if '"source":"schedule"' in line]
    # 2026-12-02T22:16:29.139123Z: a tick is due on the whole second, so the fraction is the delay.
    return [float(start[19:-1]) * 1000 for start in starts]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=30)
    args = parser.parse_args()
    rows = []
    with celery_worker() as (task, client), database() as dsn:
        for label, store in (("SQLite (FULL)", "sqlite"), ("PostgreSQL", dsn)):
            with headwater(textwrap.dedent(noop_function(WORKERS)), NOOP,
                           server=async_section(store)) as server:
                assert server.folder is not None
                metering = server.folder / "metering.jsonl"
                headwater_round(server.url, metering, 200)  # warm: connections, workers
                ratios, ours, theirs = [], [], []
                for _ in range(args.rounds):
                    hw = headwater_round(server.url, metering, args.events)
                    cel = celery_round(task, client, args.events)
                    ours.append(hw)
                    theirs.append(cel)
                    ratios.append(hw / cel)
                lat = latencies_202(server.url, 1000)
            rows.append([label, f"{median(ours):,.0f}", f"{median(theirs):,.0f}",
                         f"{median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})",
                         f"{percentile(lat, 0.5):.2f}", f"{percentile(lat, 0.99):.2f}"])
    print(f"{args.events} events a round, {args.rounds} rounds, {WORKERS} workers each; "
          f"Headwater sends {SENDERS} at a time")
    print(table(["store", "Headwater events/s", "Celery+Redis tasks/s", "ratio (median, range)",
                 "202 p50 ms", "202 p99 ms"], rows))
    late = schedule_precision(args.ticks)
    print(f"schedule, rate(1 second), {len(late)} ticks: handler start − scheduled time "
          f"p50 {percentile(late, 0.5):.1f} ms, p99 {percentile(late, 0.99):.1f} ms, "
          f"max {max(late):.1f} ms")


if __name__ == "__main__":
    main()
