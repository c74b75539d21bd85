"""Cold start of a worker whose module imports boto3: a fresh interpreter vs a fork-server fork.

Both are measured in this one process, alternating, with the router's own classes: the time from
asking for a worker to its ``ready`` frame, which is what metering reports as ``init_duration_ms``.

Usage: python bench/cold_start.py [--starts 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from harness import percentile, table

from router.config import parse
from router.pool import worker_env
from workers.forkserver import ForkServer
from workers.process import Worker, WorkerSpec

HANDLER = "import boto3\n\ndef handler(event, context):\n    return {}\n"


class Listener:
    def __init__(self) -> None:
        self.ready: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def worker_ready(self, worker: Worker) -> None:
        self.ready.set_result(time.perf_counter())

    def worker_init_failed(self, worker: Worker, error_type: str, payload: bytes) -> None:
        self.ready.set_exception(RuntimeError(payload))

    def worker_result(self, worker: Worker, result: object) -> None: ...
    def worker_output(self, worker: Worker, data: bytes) -> None: ...
    def worker_broken(self, worker: Worker) -> None: ...
    def worker_exited(self, worker: Worker, returncode: int) -> None: ...


def spec(code: str) -> WorkerSpec:
    """The function's worker spec, environment and all, as the daemon would build it."""
    function = {"name": "cold", "handler": "app.handler", "code": code,
                "runtime": f"python3.{sys.version_info.minor}"}
    config = parse({"functions": [function]}, Path(code), {})
    env = worker_env(config.functions[0], config, dict(os.environ))
    return WorkerSpec(python=sys.executable, env=env | {"AWS_LAMBDA_LOG_STREAM_NAME": "bench"},
                      cwd=code)


async def timed(start: Callable[[Worker], Awaitable[None]]) -> float:
    """Milliseconds from asking ``start`` for a worker to its ready frame; the worker then stops."""
    listener = Listener()
    worker = Worker(listener)
    t0 = time.perf_counter()
    await start(worker)
    ready = await listener.ready
    worker.stop()
    await worker.gone
    return (ready - t0) * 1000


async def main(starts: int) -> None:
    with tempfile.TemporaryDirectory() as code:
        Path(code, "app.py").write_text(HANDLER)
        s = spec(code)
        server = ForkServer()

        def fresh_start(worker: Worker) -> Awaitable[None]:
            return worker.spawn(s, time.monotonic() + 30)

        def forked_start(worker: Worker) -> Awaitable[None]:
            return server.fork(worker, {"AWS_LAMBDA_LOG_STREAM_NAME": "bench"},
                               time.monotonic() + 30)

        t0 = time.perf_counter()
        await server.start(s)
        await timed(forked_start)
        first = (time.perf_counter() - t0) * 1000
        fresh, forked = [], []
        for _ in range(starts):
            fresh.append(await timed(fresh_start))
            forked.append(await timed(forked_start))
        server.close()
        await server.gone
    rows = [
        ["fresh interpreter (no fork server)", f"{statistics.median(fresh):.1f}",
         f"{percentile(fresh, 0.99):.1f}"],
        ["forked from the fork server", f"{statistics.median(forked):.1f}",
         f"{percentile(forked, 0.99):.1f}"],
        ["ratio forked / fresh", f"{statistics.median(forked) / statistics.median(fresh):.3f}",
         f"{percentile(forked, 0.99) / percentile(fresh, 0.99):.3f}"],
    ]
    print(table(["cold start, handler imports boto3", "p50 ms", "p99 ms"], rows))
    print(f"(first worker, which starts the fork server and pays the import: {first:.0f} ms; "
          f"{starts} starts each)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=50)
    uvloop.run(main(parser.parse_args().starts))
