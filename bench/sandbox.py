"""What the sandbox costs the Invoke path: the same no-op function on two daemons, one with
``[sandbox] mode = "bubblewrap"`` (the default) and one with ``mode = "none"``, under the same load
in alternating rounds; the ratio is the median of each round's own ratio.

Usage: python bench/sandbox.py [--seconds 4] [--rounds 5]
"""

from __future__ import annotations

import argparse

from harness import NOOP_FILES, TARGETS, headwater, load, noop_function, ratio_row, run_row, table

MODES = {"bubblewrap": "sandbox on (bubblewrap, pasta, cgroups)", "none": 'sandbox = "none"'}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _, method, path = TARGETS["invoke"]
    results: dict[tuple[str, int], list] = {}
    with headwater(noop_function(), NOOP_FILES, '[sandbox]\nmode = "bubblewrap"') as on, \
            headwater(noop_function(), NOOP_FILES, '[sandbox]\nmode = "none"') as off:
        urls = {"bubblewrap": on.url + path, "none": off.url + path}
        for url in urls.values():  # warm up: workers, connections, caches
            load(url, 64, 1, method)
        for _ in range(args.rounds):
            for c in (1, 64):
                for mode, url in urls.items():
                    results.setdefault((mode, c), []).append(load(url, c, args.seconds, method))
    rows = []
    for c in (1, 64):
        rows += [run_row(label, c, results[(mode, c)]) for mode, label in MODES.items()]
        rows.append(ratio_row(f"ratio on / none at c={c}", c, results[("bubblewrap", c)],
                              results[("none", c)]))
    print(table(["Invoke, no-op, 4 warm workers", "conc.", "req/s", "p50 µs", "p99 µs", "errors"],
                rows))


if __name__ == "__main__":
    main()
