"""Cold start of a worker whose module imports boto3: forked from the fork server vs a fresh
interpreter, with the sandbox on (bubblewrap, pasta, cgroups) and off, one at a time and in bursts.

Everything is measured in this one process with the router's own classes: the time from asking for
a worker to its ``ready`` frame, which is what metering reports as ``init_duration_ms``. A fresh
interpreter is the same fork server in its exec mode (``fork_server = false``), in the same sandbox.

Usage: python bench/cold_start.py [--starts 30] [--burst 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from harness import percentile, table

from router.config import parse
from router.run.isolation import Isolation
from router.run.pool import worker_spec
from workers.forkserver import ForkServer
from workers.process import BOOTSTRAP, Worker, WorkerSpec

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


def spec(code: str, sandboxed: bool, fork: bool) -> tuple[WorkerSpec, Isolation]:
    """The function's worker spec, sandbox and all, as the daemon builds it."""
    function = {"name": "cold", "handler": "app.handler", "code": code,
                "runtime": f"python3.{sys.version_info.minor}", "fork_server": fork}
    raw = {"functions": [function], "sandbox": {"mode": "bubblewrap" if sandboxed else "none"}}
    config = parse(raw, Path(code), dict(os.environ))
    isolation = Isolation(config, BOOTSTRAP)
    isolation.open(config.functions)
    return worker_spec(config.functions[0], config, dict(os.environ), isolation), isolation


async def cold_starts(server: ForkServer, n: int) -> list[float]:
    """Milliseconds from asking for ``n`` workers at once to each one's ready frame."""
    listeners = [Listener() for _ in range(n)]
    workers = [Worker(listener) for listener in listeners]
    t0 = time.perf_counter()
    await asyncio.gather(*(server.fork(w, {"AWS_LAMBDA_LOG_STREAM_NAME": "bench"},
                                       time.monotonic() + 30) for w in workers))
    ready = await asyncio.gather(*(listener.ready for listener in listeners))
    for worker in workers:
        worker.stop()
    await asyncio.gather(*(w.gone for w in workers))
    return [(t - t0) * 1000 for t in ready]


async def main(starts: int, burst: int) -> None:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as code:
        os.chmod(code, 0o755)  # the sandboxed function's uid must read its code
        Path(code, "app.py").write_text(HANDLER)
        servers = {}
        for sandboxed in (False, True):
            for fork in (True, False):
                s, isolation = spec(code, sandboxed, fork)
                server = ForkServer("cold", isolation.tree)
                await server.start(s, time.monotonic() + 30)
                await server.ready
                await cold_starts(server, 1)  # the first pays the import: not a later cold start
                servers[sandboxed, fork] = (server, isolation)
        # Alternating rounds, so that every kind sees the same machine.
        for _ in range(starts):
            for (sandboxed, fork), (server, _) in servers.items():
                key = f"{'sandbox' if sandboxed else 'no sandbox'}, {'forked' if fork else 'fresh'}"
                results.setdefault(key, []).extend(await cold_starts(server, 1))
        for _ in range(max(1, starts // burst)):
            for (sandboxed, fork), (server, _) in servers.items():
                key = (f"{'sandbox' if sandboxed else 'no sandbox'}, "
                       f"{'forked' if fork else 'fresh'}, burst of {burst}")
                results.setdefault(key, []).extend(await cold_starts(server, burst))
        for server, isolation in servers.values():
            server.close()
            await server.gone
            isolation.close()
    rows = [[key, f"{statistics.median(v):.1f}", f"{percentile(v, 0.99):.1f}"]
            for key, v in results.items()]
    for suffix in ("", f", burst of {burst}"):
        for where in ("no sandbox", "sandbox"):
            forked = results[f"{where}, forked{suffix}"]
            fresh = results[f"{where}, fresh{suffix}"]
            rows.append([f"ratio forked / fresh ({where}{suffix})",
                         f"{statistics.median(forked) / statistics.median(fresh):.3f}", ""])
        on, off = results[f"sandbox, forked{suffix}"], results[f"no sandbox, forked{suffix}"]
        rows.append([f"ratio sandbox / no sandbox, forked{suffix}",
                     f"{statistics.median(on) / statistics.median(off):.3f}", ""])
    print(table(["cold start, handler imports boto3", "p50 ms", "p99 ms"], rows))
    print(f"({starts} starts one at a time and {max(1, starts // burst)} bursts of each kind, "
          "alternating)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--burst", type=int, default=8)
    args = parser.parse_args()
    uvloop.run(main(args.starts, args.burst))
