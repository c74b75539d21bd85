"""Invoke API and function URL throughput and latency against a bare aiohttp + uvloop server.

(a) the baseline answers ``{}`` itself; (b) Headwater runs a no-op Python handler in a worker
process behind ``POST /2015-03-31/functions/noop/invocations``; (c) the same function through its
function URL (``GET /urls/noop/``: an API Gateway v2 event in, a proxy response out). All take the
same load, in alternating rounds; the table shows medians, and the ratios b/a and c/a as the median
of each round's ratio (a round runs a, b and c back to back, so a ratio compares runs seconds apart,
and a slow minute on the shared machine moves both sides of it).

Usage: python bench/invoke.py [--seconds 5] [--rounds 3] [--workers 4]
"""

from __future__ import annotations

import argparse

from harness import (
    NOOP_FILES,
    NOOP_WORKERS,
    TARGETS,
    headwater,
    load,
    noop_function,
    ratio_row,
    raw_server,
    run_row,
    table,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=NOOP_WORKERS,
                        help="the no-op function's max_workers (and min_workers); by default a "
                             "function's default max_workers")
    args = parser.parse_args()
    results: dict[tuple[str, int], list] = {}
    with raw_server() as raw, headwater(noop_function(args.workers), NOOP_FILES) as hw:
        urls = {name: (raw if name == "raw" else hw).url + path
                for name, (_, _, path) in TARGETS.items()}
        for name, (_, method, _) in TARGETS.items():  # warm up: workers, connections, caches
            load(urls[name], 64, 1, method)
        for _ in range(args.rounds):
            for c in (1, 64):
                for name, (_, method, _) in TARGETS.items():
                    results.setdefault((name, c), []).append(
                        load(urls[name], c, args.seconds, method))
    rows = []
    for c in (1, 64):
        rows += [run_row(label, c, results[(name, c)]) for name, (label, _, _) in TARGETS.items()]
        rows += [ratio_row(f"ratio {ratio} at c={c}", c, results[(name, c)], results[("raw", c)])
                 for name, ratio in (("invoke", "b/a"), ("url", "c/a"))]
    print(table(["server", "conc.", "req/s", "p50 µs", "p99 µs", "errors"], rows))


if __name__ == "__main__":
    main()
