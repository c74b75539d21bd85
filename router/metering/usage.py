"""What the metering files add up to, for ``headwater usage``: requests, errors, throttles,
GB-seconds, billed duration and cost, by function, source or day.

Pure apart from ``snapshot`` and ``read``: the records are read from the metering file and its
rotated copies (``PATH.N`` … ``PATH.1``, then ``PATH``: oldest first), each line one record. A line
that is not a whole record (the file's last line while the daemon writes it) is counted and left out.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec

By = Literal["function", "source", "day"]
ERRORS = frozenset({"error", "timeout", "crash", "oom"})
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Line(msgspec.Struct):
    """The fields of a metering record that usage reads."""

    function: str
    source: str
    start: str
    outcome: str
    billed_duration_ms: int
    memory_mb: int
    cost_usd: float


class Usage(msgspec.Struct):
    key: str
    requests: int = 0  # invocations that ran (throttles are not)
    errors: int = 0
    throttles: int = 0
    gb_seconds: float = 0.0
    billed_duration_ms: int = 0
    cost_usd: float = 0.0


def since_seconds(text: str) -> float:
    """``90s``, ``10m``, ``24h``, ``7d`` → seconds; ValueError otherwise."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if m is None:
        raise ValueError(f"expected a duration such as 10m, 24h or 7d, got {text!r}")
    return float(m[1]) * UNITS[m[2]]


def files(path: Path) -> list[Path]:
    """The metering file and its rotated copies that exist, oldest first."""
    rotated = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: int(p.suffix[1:]), reverse=True)
    return [*rotated, *([path] if path.exists() else [])]


def snapshot(path: Path) -> list[BinaryIO]:
    """The files of ``files(path)`` opened, oldest first, as they were at one moment although the
    daemon may rotate them meanwhile.

    They are opened newest first, by number, on past the highest number listed while the next one
    exists: a rotation between two opens moves every file one number up, so the reader meets the
    file it opened last again (the same inode: skipped) and then the rest under their new names.
    Nothing is read twice or missed. (Oldest first, a rotation would move records behind it.)
    """
    def numbered(n: int) -> Path:
        return path if n == 0 else path.with_name(f"{path.name}.{n}")

    last = max((int(p.suffix[1:]) for p in files(path) if p != path), default=0)
    opened: list[BinaryIO] = []
    seen: set[tuple[int, int]] = set()
    n = -1
    while (n := n + 1) <= last or numbered(n).exists():
        try:
            f = numbered(n).open("rb")
        except FileNotFoundError:  # a gap in the numbers, or rotated past the last backup
            continue
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) in seen:
            f.close()
            continue
        seen.add((st.st_dev, st.st_ino))
        opened.append(f)
    return opened[::-1]


def read(opened: Iterable[BinaryIO], skipped: list[int]) -> Iterator[Line]:
    """The records of the files in ``opened``, each closed once read; ``skipped[0]`` counts the
    lines that are not whole records."""
    decoder = msgspec.json.Decoder(Line)
    for f in opened:
        with f:
            for raw in f:
                try:
                    yield decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    skipped[0] += 1


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def key_of(line: Line, by: By) -> str:
    if by == "day":
        return line.start[:10]
    return line.function if by == "function" else line.source


def summarize(lines: Iterable[Line], by: By, after: float | None = None) -> list[Usage]:
    """Totals per key (sorted), and a last row ``total``, of the records that started after
    ``after`` (epoch seconds; None: all)."""
    rows: dict[str, Usage] = {}
    costs: dict[str, list[float]] = {}
    gb: dict[str, list[float]] = {}
    for line in lines:
        if after is not None and epoch(line.start) < after:
            continue
        key = key_of(line, by)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Usage(key)
            costs[key], gb[key] = [], []
        if line.outcome == "throttled":
            row.throttles += 1
        else:
            row.requests += 1
            row.errors += line.outcome in ERRORS
        row.billed_duration_ms += line.billed_duration_ms
        gb[key].append(line.memory_mb / 1024 * line.billed_duration_ms / 1000)
        costs[key].append(line.cost_usd)
    out = []
    for key in sorted(rows):
        row = rows[key]
        # fsum: a sum of many small floats as exact as one over the raw records can be.
        row.gb_seconds, row.cost_usd = math.fsum(gb[key]), math.fsum(costs[key])
        out.append(row)
    total = Usage("total", sum(r.requests for r in out), sum(r.errors for r in out),
                  sum(r.throttles for r in out), math.fsum(v for k in gb for v in gb[k]),
                  sum(r.billed_duration_ms for r in out),
                  math.fsum(v for k in costs for v in costs[k]))
    return [*out, total]


COLUMNS = ("requests", "errors", "throttles", "gb_seconds", "billed_duration_ms", "cost_usd")


def cells(rows: list[Usage]) -> list[tuple[str, ...]]:
    return [(r.key, str(r.requests), str(r.errors), str(r.throttles), f"{r.gb_seconds:.6f}",
             str(r.billed_duration_ms), f"{r.cost_usd:.10f}") for r in rows]


def render(rows: list[Usage], by: By, fmt: Literal["json", "csv"]) -> str:
    """The report as JSON (numbers as numbers) or CSV (as the table shows them)."""
    if fmt == "json":
        return json.dumps([{by if r.key != "total" else "total": r.key,
                            **{c: getattr(r, c) for c in COLUMNS}} for r in rows], indent=2)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([by, *COLUMNS])
    writer.writerows(cells(rows))
    return out.getvalue().rstrip("\n")
