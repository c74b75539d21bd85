"""What the benchmarks share: servers started as subprocesses, and one load generator for all.

The load generator is wrk when it is installed (``apt-get install wrk``), else an aiohttp client in
this process; each benchmark uses the same one for its baseline and for Headwater, and reports
ratios and medians of alternating rounds, since the machines are shared and noisy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from router.config import FunctionConfig
from workers.runtimes.python import distribution_files

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = """
wrk.method = "{method}"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local bad = summary.errors.status + summary.errors.connect + summary.errors.read
              + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
                         latency:percentile(50), latency:percentile(99), bad))
end
"""


# The no-op function that bench/invoke.py and bench/instructions.py both measure, and the three
# servers they compare: name → (label, method, path).
NOOP_FILES = {"noop/app.py": "def handler(event, context):\n    return {}\n"}
TARGETS = {
    "raw": ("a: raw aiohttp + uvloop", "POST", "/2015-03-31/functions/noop/invocations"),
    "invoke": ("b: Headwater invoke, no-op", "POST", "/2015-03-31/functions/noop/invocations"),
    "url": ("c: Headwater function URL, no-op", "GET", "/urls/noop/items/1"),
}


# How many workers the no-op function runs by default: a function's default max_workers, the
# concurrency an untuned function scales to under the benchmarks' load, all kept warm.
NOOP_WORKERS: int = next(f.default for f in msgspec.structs.fields(FunctionConfig)
                         if f.name == "max_workers")


def noop_function(workers: int = NOOP_WORKERS, name: str = "noop") -> str:
    """The no-op function's TOML (its code in the folder ``name``), with ``workers`` warm workers
    and no more."""
    return f"""
        [[functions]]
        name = "{name}"
        handler = "app.handler"
        code = "{name}"
        min_workers = {workers}
        max_workers = {workers}
    """


@dataclass
class Server:
    url: str
    pid: int
    folder: Path | None = None  # a daemon's: its config, code and metering.jsonl


@dataclass
class Run:
    rps: float
    p50_us: float
    p99_us: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.args} did not come up") from None
            time.sleep(0.05)


@contextlib.contextmanager
def process(*argv: str, ready_url: str, wrap: tuple[str, ...] = (),
            env: dict[str, str] | None = None) -> Iterator[int]:
    """Run ``argv`` (under ``wrap``, a command prefix such as valgrind; with ``env``, in that
    environment) until it answers; yield its pid."""
    # Function logs are not what is measured: they go to /dev/null, as to a fast journal.
    proc = subprocess.Popen([*wrap, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        wait_http(ready_url, proc, timeout=300 if wrap else 20)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def raw_server(wrap: tuple[str, ...] = ()) -> Iterator[Server]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with process(sys.executable, str(ROOT / "bench" / "raw_server.py"), str(port),
                 ready_url=f"{base}/urls/x/ready", wrap=wrap) as pid:
        yield Server(base, pid)


def copy_distributions(folder: Path, names: tuple[str, ...]) -> None:
    """The installed distributions ``names`` (their packages and metadata) copied into
    ``folder``, as ``pip install --target`` would put them in a function's package: a sandboxed
    function sees the machine's Python, not this virtualenv."""
    for path in distribution_files(names):
        (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, folder / os.path.basename(path))


@contextlib.contextmanager
def headwater(functions: str, files: dict[str, str], server: str = "",
              wrap: tuple[str, ...] = (), executable: tuple[str, ...] = (),
              prepare: Callable[[Path], None] | None = None,
              env: dict[str, str] | None = None) -> Iterator[Server]:
    """A daemon on a free port; ``functions`` is TOML whose code paths are folders of ``files``
    (those named in ``executable`` made executable: a custom runtime's bootstrap), and of what
    ``prepare`` puts in the folder before the daemon starts; ``env`` is its environment (a
    PYTHONPATH runs another tree's code)."""
    with tempfile.TemporaryDirectory(prefix="hw-bench-") as tmp:
        Path(tmp).chmod(0o755)  # sandboxed functions run as uids of their own and read their code
        for name, source in files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(source))
            path.chmod(0o755 if name in executable else 0o644)
        if prepare is not None:
            prepare(Path(tmp))
        port = free_port()
        config = Path(tmp) / "config.toml"
        config.write_text(textwrap.dedent(f"""
            [server]
            listen = "127.0.0.1:{port}"
            {server}
            [metering]
            path = "metering.jsonl"
        """) + textwrap.dedent(functions))
        base = f"http://127.0.0.1:{port}"
        with process(sys.executable, "-m", "router", "serve", "--config", str(config),
                     ready_url=f"{base}/healthz", wrap=wrap, env=env) as pid:
            yield Server(base, pid, Path(tmp))


def load(url: str, concurrency: int, seconds: float, method: str = "POST",
         body: str = "{}") -> Run:
    if shutil.which("wrk"):
        return _wrk(url, concurrency, seconds, method, body)
    return asyncio.run(_aiohttp_load(url, concurrency, seconds, method, body))


def _wrk(url: str, concurrency: int, seconds: float, method: str, body: str) -> Run:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT.format(method=method, body=body))
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "-s", script.name, url],
            capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT"))
    requests, duration_us, p50, p99, errors = map(int, line.split()[1:])
    return Run(requests / (duration_us / 1e6), p50, p99, errors)


async def _aiohttp_load(url: str, concurrency: int, seconds: float, method: str,
                        body: str) -> Run:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            async with session.request(method, url, data=body.encode()) as r:
                await r.read()
                errors += r.status >= 400
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(client(s) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Run(len(latencies) / elapsed, percentile(latencies, 0.5) * 1e6,
               percentile(latencies, 0.99) * 1e6, errors)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median_run(runs: list[Run]) -> Run:
    return Run(statistics.median(r.rps for r in runs), statistics.median(r.p50_us for r in runs),
               statistics.median(r.p99_us for r in runs), sum(r.errors for r in runs))


def run_row(label: str, concurrency: int, runs: list[Run]) -> list[str]:
    """A table row of the median of ``runs``: req/s, p50 and p99 µs, errors."""
    r = median_run(runs)
    return [label, str(concurrency), f"{r.rps:,.0f}", f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}",
            str(r.errors)]


def ratio_row(label: str, concurrency: int, runs: list[Run], base: list[Run]) -> list[str]:
    """A table row of the medians of the rounds' own ratios of ``runs`` to ``base`` (same rounds),
    for req/s, p50 and p99: a round compares runs seconds apart, the machine drifts in minutes."""
    pairs = list(zip(runs, base, strict=True))
    ratios = [statistics.median(getattr(x, f) / getattr(b, f) for x, b in pairs)
              for f in ("rps", "p50_us", "p99_us")]
    return [label, str(concurrency), *(f"{v:.2f}" for v in ratios), ""]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, rows)])
