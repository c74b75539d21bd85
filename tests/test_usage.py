"""``headwater usage``: the metering records added up, checked against a sum by hand over the raw
records of a real daemon's files (rotated ones included), and the pure parts with tables."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import Daemon, function_toml

from router.metering.usage import Line, files, since_seconds, snapshot, summarize


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("24h", 86400),
                                               ("7d", 604800), ("1.5h", 5400)])
def test_since_seconds(text: str, seconds: float) -> None:
    assert since_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "h", "10 minutes", "-1h", "1w"])
def test_since_seconds_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        since_seconds(text)


def line(function: str, outcome: str = "success", billed: int = 10, memory: int = 1024,
         start: str = "2026-12-01T10:00:00.000000Z", source: str = "invoke",
         cost: float = 0.000001) -> Line:
    return Line(function, source, start, outcome, billed, memory, cost)


def test_summarize_counts_errors_and_throttles_apart() -> None:
    rows = summarize([line("a"), line("a", "error"), line("a", "timeout"), line("b", "throttled", 0),
                      line("b", "oom", 5, 512)], "function")
    assert [r.key for r in rows] == ["a", "b", "total"]
    a, b, total = rows
    assert (a.requests, a.errors, a.throttles, a.billed_duration_ms) == (3, 2, 0, 30)
    assert (b.requests, b.errors, b.throttles) == (1, 1, 1)
    assert a.gb_seconds == pytest.approx(0.03) and b.gb_seconds == pytest.approx(0.0025)
    assert (total.requests, total.errors, total.throttles) == (4, 3, 1)
    assert total.cost_usd == pytest.approx(5e-6)


def test_summarize_by_day_and_since() -> None:
    lines = [line("a", start="2026-12-01T23:59:59.999999Z"), line("a", start="2026-12-02T00:00:00Z"),
             line("a", start="2026-12-02T08:00:00Z", source="sqs")]
    assert [(r.key, r.requests) for r in summarize(lines, "day")] == [
        ("2026-12-01", 1), ("2026-12-02", 2), ("total", 3)]
    after = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    assert [(r.key, r.requests) for r in summarize(lines, "source", after)] == [
        ("invoke", 1), ("sqs", 1), ("total", 2)]


def test_files_are_read_oldest_first(tmp_path: Path) -> None:
    base = tmp_path / "metering.jsonl"
    for name in ("metering.jsonl", "metering.jsonl.1", "metering.jsonl.10", "metering.jsonl.2",
                 "metering.jsonl.old"):
        (tmp_path / name).write_text("")
    assert [p.name for p in files(base)] == ["metering.jsonl.10", "metering.jsonl.2",
                                             "metering.jsonl.1", "metering.jsonl"]


def test_usage_matches_a_sum_by_hand_over_the_rotated_files(
        make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(function_toml("ok", "outcomes.returns", memory_mb=256)
                         + function_toml("bad", "outcomes.raises")
                         + function_toml("off", "outcomes.returns", max_workers=0),
                         server="[metering]\nrotate_bytes = 4096\nbackups = 50\n")
    for i in range(40):
        daemon.invoke("ok", {"value": i})
        if i % 4 == 0:
            daemon.invoke("bad", {})
            daemon.invoke("off", {})
    daemon.stop()
    metering = daemon.folder / "var" / "metering.jsonl"
    assert len(files(metering)) > 2  # rotated several times
    raw = [json.loads(text) for path in files(metering) for text in path.read_text().splitlines()]
    assert len(raw) == 60 and len({r["request_id"] for r in raw}) == 60
    done = subprocess.run([sys.executable, "-m", "router", "usage", "--config",
                           str(daemon.config_path), "--format", "json"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    report = {row.get("function", "total"): row for row in json.loads(done.stdout)}
    for name in ("ok", "bad", "off"):
        mine = [r for r in raw if r["function"] == name]
        row = report[name]
        assert row["requests"] == sum(r["outcome"] != "throttled" for r in mine)
        assert row["errors"] == sum(r["outcome"] == "error" for r in mine)
        assert row["throttles"] == sum(r["outcome"] == "throttled" for r in mine)
        assert row["billed_duration_ms"] == sum(r["billed_duration_ms"] for r in mine)
        assert row["cost_usd"] == math.fsum(r["cost_usd"] for r in mine)
        assert row["gb_seconds"] == pytest.approx(
            sum(r["memory_mb"] / 1024 * r["billed_duration_ms"] / 1000 for r in mine))
    assert report["total"]["cost_usd"] == math.fsum(r["cost_usd"] for r in raw)
    assert (report["ok"]["requests"], report["bad"]["errors"], report["off"]["throttles"]) == (40, 10, 10)
    table = subprocess.run([sys.executable, "-m", "router", "usage", "--config",
                            str(daemon.config_path), "--by", "source"],
                           capture_output=True, text=True, timeout=30)
    assert table.returncode == 0 and table.stdout.split()[:7] == [
        "source", "requests", "errors", "throttles", "gb_seconds", "billed_duration_ms", "cost_usd"]
    assert "invoke" in table.stdout and "total" in table.stdout


def test_a_snapshot_taken_while_the_daemon_rotates_reads_each_record_once(
        make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(function_toml("ok", "outcomes.returns"),
                         server="[metering]\nrotate_bytes = 4096\nbackups = 1000\n")
    metering = daemon.folder / "var" / "metering.jsonl"
    answered = [0]
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            daemon.invoke("ok", {})
            answered[0] += 1  # its record was written before its response

    invoker = threading.Thread(target=load)
    invoker.start()
    try:
        while answered[0] < 300:
            before = answered[0]
            ids = []
            for f in snapshot(metering):
                with f:  # a line without its newline is still being written: not yet a record
                    ids += [json.loads(text)["request_id"] for text in f if text.endswith(b"\n")]
            assert len(ids) == len(set(ids))  # none read twice
            assert len(ids) >= before  # none missed
    finally:
        stop.set()
        invoker.join()
    assert len(files(metering)) > 10  # it did rotate under the reader


def test_rotate_daily_starts_a_file_at_the_first_record_of_a_new_day(
        make_daemon: Callable[..., Daemon]) -> None:
    def yesterdays_file(folder: Path) -> None:
        (folder / "var").mkdir()
        old = folder / "var" / "metering.jsonl"
        old.write_text('{"request_id": "yesterday"}\n')
        os.utime(old, (time.time() - 86400, time.time() - 86400))

    daemon = make_daemon(function_toml("ok", "outcomes.returns"), before_start=yesterdays_file,
                         server="[metering]\nrotate_daily = true\n")
    daemon.invoke("ok", {})
    daemon.invoke("ok", {})  # the same day: the same file
    daemon.stop()
    folder = daemon.folder / "var"
    assert (folder / "metering.jsonl.1").read_text() == '{"request_id": "yesterday"}\n'
    lines = (folder / "metering.jsonl").read_text().splitlines()
    assert [json.loads(text)["function"] for text in lines] == ["ok", "ok"]
    assert not (folder / "metering.jsonl.2").exists()
