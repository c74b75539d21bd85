"""What the log formats cost the no-op invoke: this tree's text and JSON lines against the code of
an earlier commit (by default the one before the log formats: untimestamped lines, no ring), run
side by side in alternating rounds with the same load, each round starting with another.

Each invocation writes START, END and REPORT (the no-op prints nothing), so this is the per-
invocation cost of timestamps, the format and the ring; stderr goes to /dev/null as in the other
benchmarks. The ratios are medians of each round's new/old ratio.

Usage: python bench/logs.py [--base COMMIT] [--seconds 3] [--rounds 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from statistics import median

from harness import (
    NOOP_FILES,
    NOOP_WORKERS,
    ROOT,
    TARGETS,
    headwater,
    load,
    noop_function,
    ratio_row,
    run_row,
    table,
)

BASE = "824ff34"  # the branch's start: text lines without timestamps, no ring


def checkout(commit: str, into: Path) -> None:
    """The tree of ``commit`` under ``into`` (git archive: the repository itself is not touched)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(into, filter="data")


def per_invocation(base_tree: Path, rounds: int, n: int = 20_000) -> list[list[str]]:
    """The log's own cost of one invocation, in process: the old tree's ``FunctionLog`` against
    this tree's, text and JSON, with nothing printed and with one line printed, written to
    /dev/null through the same ``LogWriter``; medians of alternating rounds."""
    import asyncio
    import importlib.util
    import time

    from router.intake.invocation import Invocation, Outcome
    from router.logs.format import LogFormat
    from router.logs.ring import LogRings
    from router.metering.sink import LogWriter
    from router.run.funclog import FunctionLogs

    spec = importlib.util.spec_from_file_location("old_funclog",
                                                  base_tree / "router" / "run" / "funclog.py")
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)

    async def run() -> dict[tuple[str, bool], list[float]]:
        loop = asyncio.get_running_loop()
        writer = LogWriter(os.open(os.devnull, os.O_WRONLY), delay=0.05)
        logs = {"before": old.FunctionLog(writer, "noop", 128),
                "text": FunctionLogs(writer, LogFormat("text"), LogRings(1 << 20)).of("noop", 128),
                "json": FunctionLogs(writer, LogFormat("json"), LogRings(1 << 20)).of("noop", 128)}
        outcome = Outcome("success", b"{}", None, 0.42, 15)
        timings: dict[tuple[str, bool], list[float]] = {}
        for _ in range(rounds):
            for prints in (False, True):
                for name, log in logs.items():
                    invs = [Invocation(b"{}", loop.create_future(), source="bench")
                            for _ in range(n)]
                    started = time.perf_counter()
                    for i, inv in enumerate(invs):
                        if prints:
                            log.output(inv, b"processed order 1234\n")
                        log.end(inv, outcome, 1)
                        if i % 256 == 0:
                            writer.flush()
                    writer.flush()
                    timings.setdefault((name, prints), []).append(
                        (time.perf_counter() - started) / n * 1e6)
        return timings

    timings = asyncio.run(run())
    rows = []
    for prints in (False, True):
        before = timings[("before", prints)]
        for name in ("before", "text", "json"):
            mine = timings[(name, prints)]
            ratio = median(m / b for m, b in zip(mine, before, strict=True))
            rows.append([name, "one line" if prints else "nothing", f"{median(mine):.2f}",
                         f"{ratio:.2f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default=BASE)
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=NOOP_WORKERS)
    args = parser.parse_args()
    _, method, path = TARGETS["invoke"]
    functions = noop_function(args.workers)
    labels = {"base": f"before ({args.base}): text", "text": "this tree: text",
              "json": "this tree: json"}
    results: dict[tuple[str, int], list] = {}
    with tempfile.TemporaryDirectory(prefix="hw-base-") as base_tree, contextlib.ExitStack() as up:
        checkout(args.base, Path(base_tree))
        print(table(["log", "printed", "µs per invocation", "ratio to before"],
                    per_invocation(Path(base_tree), args.rounds)))
        old_env = {**os.environ, "PYTHONPATH": base_tree}
        # `python -m` puts the working folder first on the path, before PYTHONPATH: from this
        # repository's folder, the old tree's daemon would run this tree's code. Each daemon
        # runs from an empty folder, then, and finds its code by PYTHONPATH or the install.
        os.chdir(up.enter_context(tempfile.TemporaryDirectory(prefix="hw-cwd-")))
        servers = {
            "base": up.enter_context(headwater(functions, NOOP_FILES, env=old_env)),
            "text": up.enter_context(headwater(functions, NOOP_FILES)),
            "json": up.enter_context(headwater(functions, NOOP_FILES, 'log_format = "json"')),
        }
        for server in servers.values():  # warm up: workers, connections, caches
            load(server.url + path, 64, 1, method)
        names = list(servers)
        for n in range(args.rounds):
            for c in (1, 64):
                # Each round starts with another server: none always runs after the same one.
                for name in names[n % 3:] + names[:n % 3]:
                    results.setdefault((name, c), []).append(
                        load(servers[name].url + path, c, args.seconds, method))
    rows = []
    for c in (1, 64):
        rows += [run_row(label, c, results[(name, c)]) for name, label in labels.items()]
        rows += [ratio_row(f"ratio {name}/before at c={c}", c, results[(name, c)],
                           results[("base", c)]) for name in ("text", "json")]
    print(table(["server", "conc.", "req/s", "p50 µs", "p99 µs", "errors"], rows))


if __name__ == "__main__":
    main()
