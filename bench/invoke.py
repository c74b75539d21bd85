"""Invoke API throughput and latency against a bare aiohttp + uvloop server, in one run.

(a) the baseline answers ``{}`` itself; (b) Headwater runs a no-op Python handler in a worker
process behind ``POST /2015-03-31/functions/noop/invocations``. Both take the same load, in
alternating rounds; the table shows medians and the ratio b/a.

Usage: python bench/invoke.py [--seconds 5] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse

from harness import headwater, load, median_run, raw_server, table

PATH = "/2015-03-31/functions/noop/invocations"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2,
                        help="the no-op function's max_workers (and min_workers)")
    args = parser.parse_args()
    functions = f"""
        [[functions]]
        name = "noop"
        handler = "app.handler"
        code = "noop"
        min_workers = {args.workers}
        max_workers = {args.workers}
    """
    results: dict[tuple[str, int], list] = {}
    noop = {"noop/app.py": "def handler(event, context):\n    return {}\n"}
    with raw_server() as raw, headwater(functions, noop) as hw:
        for url in (raw, hw):  # warm both up: worker start, connection pools, caches
            load(url + PATH, 64, 1)
        for _ in range(args.rounds):
            for c in (1, 64):
                for name, url in (("raw", raw), ("headwater", hw)):
                    results.setdefault((name, c), []).append(load(url + PATH, c, args.seconds))
    rows = []
    for c in (1, 64):
        a, b = median_run(results[("raw", c)]), median_run(results[("headwater", c)])
        for name, r in (("a: raw aiohttp + uvloop", a), ("b: Headwater invoke, no-op", b)):
            rows.append([name, str(c), f"{r.rps:,.0f}", f"{r.p50_us:,.0f}", f"{r.p99_us:,.0f}",
                         str(r.errors)])
        rows.append([f"ratio b/a at c={c}", str(c), f"{b.rps / a.rps:.2f}",
                     f"{b.p50_us / a.p50_us:.2f}", f"{b.p99_us / a.p99_us:.2f}", ""])
    print(table(["server", "conc.", "req/s", "p50 µs", "p99 µs", "errors"], rows))


if __name__ == "__main__":
    main()
