"""CPU instructions per request of the router process, against the bare aiohttp + uvloop server.

Timed benchmarks on a shared 2-core machine swing by a factor of two from one minute to the next;
an instruction count does not. Each server runs under ``valgrind --tool=callgrind`` (user-space
instructions of that one process: not the kernel's, not the workers'); after a warm-up the
counters are zeroed, a fixed number of requests is sent over keep-alive connections, and the
count is dumped. (a) is the raw server of ``bench/invoke.py``, (b) the Invoke API and (c) the
function URL of a no-op function with four warm workers (a function's default max_workers). The
ratio a/x is the throughput that x would reach relative to (a) if instructions were all a request
cost; the timed ratios of ``bench/invoke.py`` are lower, since the router also pays system calls
and the cache misses of sharing its cores with the workers.

Usage: python bench/instructions.py [--requests 2000] [--workers 4]   (needs valgrind)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from pathlib import Path

from harness import NOOP_FILES, NOOP_WORKERS, TARGETS, headwater, noop_function, raw_server, table


async def send(port: int, request: bytes, total: int, concurrency: int) -> int:
    """Send ``total`` requests over ``concurrency`` keep-alive connections; return how many got 200."""
    ok = 0

    async def connection(count: int) -> None:
        nonlocal ok
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            ok += head.startswith(b"HTTP/1.1 200 ")
        writer.close()

    await asyncio.gather(*(connection(total // concurrency) for _ in range(concurrency)))
    return ok


def measure(base: str, method: str, path: str, requests: int, out: Path, pid: int) -> float:
    port = int(base.rsplit(":", 1)[1])
    request = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").encode()
    concurrency = 16
    requests -= requests % concurrency
    asyncio.run(send(port, request, 160, concurrency))  # warm: workers, caches, connections
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    ok = asyncio.run(send(port, request, requests, concurrency))
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    if ok != requests:
        raise RuntimeError(f"{path}: {requests - ok} of {requests} requests failed")
    dump = max(out.parent.glob(out.name + ".*"), key=lambda p: p.stat().st_mtime)
    summary = next(line for line in dump.read_text().splitlines() if line.startswith("summary:"))
    return int(summary.split()[1]) / requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=NOOP_WORKERS,
                        help="the no-op function's warm workers")
    args = parser.parse_args()
    per_request: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hw-callgrind-") as tmp:
        for name, (_, method, path) in TARGETS.items():
            out = Path(tmp) / f"{name}.out"
            # valgrind runs the program in its own process, so the pid is the one to address.
            wrap = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
            server = (raw_server(wrap) if name == "raw"
                      else headwater(noop_function(args.workers), NOOP_FILES, wrap=wrap))
            with server as s:
                per_request[name] = measure(s.url, method, path, args.requests, out, s.pid)
    raw = per_request["raw"]
    rows = [[label, f"{per_request[name]:,.0f}", f"{raw / per_request[name]:.2f}"]
            for name, (label, _, _) in TARGETS.items()]
    print(table(["server", "instructions / request", "ratio a/x"], rows))


if __name__ == "__main__":
    main()
