"""Burst and scale-in, with the router's own Registry and real workers, in one process.

1,000 invocations are submitted at once to a function with min_workers = 0, max_workers = 8 and a
handler that sleeps 10 ms. Reported: the time until 8 workers are busy, the time to drain against
the ideal 1000 × 10 ms / 8 = 1.25 s, and, with keep_warm_s = 2, when the workers stop after the
burst. The same burst runs with the fork server and with fresh interpreters, as each other's
baseline.

Usage: python bench/scaling.py [--invocations 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from harness import table

from router.config import parse
from router.intake.invocation import Invocation
from router.run.registry import Registry

HANDLER = "import time\n\ndef handler(event, context):\n    time.sleep(0.01)\n    return {}\n"
WORKERS = 8
KEEP_WARM_S = 2.0


async def burst(code: str, fork_server: bool, n: int) -> list[str]:
    config = parse({
        "metering": {"path": os.path.join(code, "metering.jsonl")},
        "functions": [{"name": "burst", "handler": "app.handler", "code": code,
                       "runtime": f"python3.{sys.version_info.minor}", "min_workers": 0,
                       "max_workers": WORKERS, "keep_warm_s": KEEP_WARM_S,
                       "fork_server": fork_server}]}, Path(code), {})
    registry = Registry(config, {"PATH": os.environ["PATH"]})
    registry.logs.fd = os.open(os.devnull, os.O_WRONLY)
    registry.start()
    pool = registry.pools["burst"]
    if pool.forkserver is not None:  # as in a daemon that has been up a moment: the template is ready
        await pool.forkserver.ready
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    invocations = [Invocation(b"{}", loop.create_future(), source="bench") for _ in range(n)]
    for inv in invocations:
        pool.submit(inv)
    while pool.busy < WORKERS:
        await asyncio.sleep(0.0005)
    all_busy = time.perf_counter() - started
    outcomes = await asyncio.gather(*(inv.future for inv in invocations))
    drained = time.perf_counter() - started
    assert all(o.status == "success" for o in outcomes)
    idle_from = time.perf_counter()
    while pool.workers:
        await asyncio.sleep(0.01)
    scaled_in = time.perf_counter() - idle_from
    await registry.close(5)
    ideal = n * 0.010 / WORKERS
    return [f"{all_busy * 1000:.0f}", f"{drained:.2f}", f"{drained / ideal:.2f}",
            f"{scaled_in:.2f}"]


async def main(n: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as code:
        Path(code, "app.py").write_text(HANDLER)
        for fork_server in (True, False):
            label = "fork server" if fork_server else "fresh interpreters"
            rows.append([label, *await burst(code, fork_server, n)])
    print(table(["workers started from", f"until {WORKERS} busy (ms)", "drain (s)",
                 "drain / ideal", f"scale-in after (s), keep_warm_s={KEEP_WARM_S:g}"], rows))
    print(f"({n} invocations of a 10 ms handler submitted at once; ideal drain "
          f"{n * 0.010 / WORKERS:.2f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--invocations", type=int, default=1000)
    uvloop.run(main(parser.parse_args().invocations))
