"""What an idle function costs: the memory of its fork server and its sandbox (bubblewrap's two
processes and pasta) while it is scaled to zero, and after ``fork_server_idle_s`` gives them back.

Measures, on one daemon with N functions and no traffic, the proportional set size (PSS: shared
pages split between their users) and the RSS of every process the functions hold, divided by N.

Usage: python bench/idle.py [--functions 9]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import headwater, table


def processes() -> dict[int, tuple[int, str]]:
    """pid → (ppid, state) of every process on the machine."""
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(entry.name)] = (int(fields[1]), fields[0])
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    except OSError:
        return 0, 0
    return fields.get("Pss", 0), fields.get("Rss", 0)


def held(daemon: int) -> list[int]:
    """The daemon's descendants: bubblewrap, the fork servers, and pasta (a child of the daemon)."""
    table_ = processes()
    found, frontier = set(), {daemon}
    while frontier:
        frontier = {p for p, (ppid, _) in table_.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--functions", type=int, default=9)
    args = parser.parse_args()
    n = args.functions
    functions = "".join(f'[[functions]]\nname = "f{i}"\nhandler = "app.handler"\ncode = "fn"\n'
                        f"fork_server_idle_s = 3\n" for i in range(n))
    files = {"fn/app.py": "import json, urllib.request\n\ndef handler(event, context):\n"
                          "    return {}\n"}
    rows = []
    with headwater(functions, files) as hw:
        time.sleep(1.5)  # every fork server imported its module
        for label in ("scaled to zero, fork servers kept", "after fork_server_idle_s"):
            pids = held(hw.pid)
            pss = sum(memory_kb(p)[0] for p in pids)
            rss = sum(memory_kb(p)[1] for p in pids)
            rows.append([label, str(len(pids)), f"{pss / n / 1024:.1f}", f"{rss / n / 1024:.1f}"])
            time.sleep(5)
    print(table(["idle function (per function)", "processes", "PSS MB", "RSS MB"], rows))
    print(f"({n} functions, no traffic)")


if __name__ == "__main__":
    main()
