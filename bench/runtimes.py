"""The runtimes side by side on one daemon (sandboxed, the default): the same no-op handler on the
built-in Python runtime (forked workers, the bootstrap's frames), on awslambdaric (AWS's Python
runtime interface client, through the Lambda Runtime API) and on Node.js (Headwater's runtime
client, through the Runtime API).

Throughput: 4 warm workers each, the same load in alternating rounds, ratios to the built-in
runtime taken per round. Cold starts: a function with no warm worker, invoked after its last
worker has gone (keep_warm_s), timed by the caller; the median of the rounds.

Usage: python bench/runtimes.py [--seconds 3] [--rounds 5] [--colds 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from statistics import median

from harness import copy_distributions, headwater, load, run_row, table

from workers.runtimes.base import BASE_PYTHON

RIC = ("awslambdaric", "simplejson", "snapshot-restore-py")

NOOP = {
    "py/app.py": "def handler(event, context):\n    return {}\n",
    "ric/app.py": "def handler(event, context):\n    return {}\n",
    # The machine's Python runs the client the package brings (the sandbox binds no virtualenv).
    "ric/bootstrap": f'#!/bin/sh\nexec {BASE_PYTHON} -m awslambdaric "$_HANDLER"\n',
    "node/index.js": "exports.handler = async () => ({});\n",
}
RUNTIMES = {  # name → (label, runtime, code)
    "py": ("built-in Python (forked, frames)", f"python3.{sys.version_info.minor}", "py"),
    "ric": ("awslambdaric (Runtime API)", "provided.al2023", "ric"),
    "node": ("Node.js (Runtime API)", "nodejs20.x", "node"),
}


def functions() -> str:
    out = []
    for name, (_, runtime, code) in RUNTIMES.items():
        handler = "index.handler" if name == "node" else "app.handler"
        for prefix, extra in (("", "min_workers = 4\nmax_workers = 4"),
                              ("cold-", "max_workers = 1\nkeep_warm_s = 0.3")):
            out.append(f'[[functions]]\nname = "{prefix}{name}"\nhandler = "{handler}"\n'
                       f'code = "{code}"\nruntime = "{runtime}"\n{extra}\n')
    return "\n".join(out)


def invoke_ms(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST")) as r:
        body = r.read()
        assert "X-Amz-Function-Error" not in r.headers, body
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--colds", type=int, default=10)
    args = parser.parse_args()
    path = "/2015-03-31/functions/{}/invocations"
    results: dict[tuple[str, int], list] = {}
    colds: dict[str, list[float]] = {}
    with headwater(functions(), NOOP, executable=("ric/bootstrap",),
                   prepare=lambda folder: copy_distributions(folder / "ric", RIC)) as daemon:
        urls = {name: daemon.url + path.format(name) for name in RUNTIMES}
        for url in urls.values():  # warm up: workers, connections
            load(url, 8, 1)
        for _ in range(args.rounds):
            for c in (1, 8):
                for name, url in urls.items():
                    results.setdefault((name, c), []).append(load(url, c, args.seconds))
        for _ in range(args.colds):
            for name in RUNTIMES:
                url = daemon.url + path.format(f"cold-{name}")
                time.sleep(1.0)  # past keep_warm_s: the next invocation starts a worker
                colds.setdefault(name, []).append(invoke_ms(url))
    rows = []
    for c in (1, 8):
        rows += [run_row(label, c, results[(name, c)]) for name, (label, _, _) in RUNTIMES.items()]
        for name in ("ric", "node"):
            pairs = zip(results[(name, c)], results[("py", c)], strict=True)
            ratio = median(x.rps / b.rps for x, b in pairs)
            rows.append([f"ratio {name} / built-in, req/s", str(c), f"{ratio:.2f}", "", "", ""])
    print(table(["no-op invoke, 4 warm workers", "conc.", "req/s", "p50 µs", "p99 µs", "errors"],
                rows))
    print()
    print(table(["cold start (first invocation, caller's view)", "p50 ms", "max ms"],
                [[RUNTIMES[n][0], f"{median(v):.1f}", f"{max(v):.1f}"] for n, v in colds.items()]))
    print(json.dumps({"rounds": args.rounds, "seconds": args.seconds, "colds": args.colds}))


if __name__ == "__main__":
    main()
