"""The router does not trust workers: handlers that forge frames on the worker's channel, flood its
output and back up the daemon's stderr, against the real daemon."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
from conftest import Daemon, Response, function_toml, untimed


@pytest.fixture(scope="module", params=[True, False], ids=["forked", "fresh"])
def daemon(make_daemon, request) -> Daemon:  # type: ignore[no-untyped-def]
    mode = f"fork_server = {str(request.param).lower()}\n"
    functions = "".join([
        function_toml("forger", "untrusted.forges", timeout_s=5, max_workers=1),
        function_toml("no_newline", "untrusted.no_newline", max_workers=1),
        function_toml("ok", "hostile.ok"),
    ]).replace("[[functions]]\n", "[[functions]]\n" + mode)
    return make_daemon(functions)


def while_healthy(daemon: Daemon, call: Callable[[], Response]) -> tuple[Response, float, int]:
    """Runs ``call`` while asking /healthz every 10 ms: its response, the slowest /healthz and how
    many were asked while it ran."""
    result: list[Response] = []
    caller = threading.Thread(target=lambda: result.append(call()))
    caller.start()
    slowest, samples = 0.0, 0
    while caller.is_alive():
        started = time.monotonic()
        assert daemon.request("GET", "/healthz", timeout=5).status == 200
        slowest = max(slowest, time.monotonic() - started)
        samples += 1
        time.sleep(0.01)
    caller.join()
    return result[0], slowest, samples


def worker_of(daemon: Daemon, r: Response) -> int:
    """The host pid of the worker that answered (its own pid is its sandbox's)."""
    return int(daemon.record(r.headers["x-amzn-RequestId"])["worker_pid"])  # type: ignore[call-overload]


def gone(pid: int, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def metric(daemon: Daemon, name: str) -> float:
    text = daemon.request("GET", "/metrics").body.decode()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))


# --- frames out of turn ----------------------------------------------------------------------------


@pytest.mark.parametrize("send", ["ready", "init_error", "unknown", "garbage", "huge"])
def test_a_frame_out_of_turn_kills_the_worker_and_crashes_its_invocation(
        daemon: Daemon, send: str) -> None:
    before = worker_of(daemon, daemon.invoke("forger", {}))
    started = time.monotonic()

    r, slowest, _ = while_healthy(daemon, lambda: daemon.invoke("forger", {"send": send}))

    # Killed at the frame, not at the 5 s timeout (the handler would linger for 30 s).
    assert time.monotonic() - started < 2.5, r
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled", r
    rid = r.headers["x-amzn-RequestId"]
    assert r.json() == {"errorType": "Runtime.ExitError", "errorMessage":
                        f"RequestId: {rid} Error: Runtime exited with error: signal: killed"}
    record = daemon.record(rid)
    assert (record["outcome"], record["error_type"]) == ("crash", "Runtime.ExitError")
    assert record["worker_pid"] == before and gone(before)
    daemon.wait_for_line(f"worker {before} sent ")
    after = daemon.invoke("forger", {})
    assert after.status == 200 and worker_of(daemon, after) != before, after
    assert slowest < 0.1, slowest


def test_a_forged_result_is_billed_for_the_time_the_router_measured(daemon: Daemon) -> None:
    # The handler runs 300 ms, then writes a result of its own that says it took 0.001 ms; the
    # bootstrap's real result then comes with nothing in flight, and the worker is killed.
    r = daemon.invoke("forger", {"send": "result", "sleep": 0.3})

    assert r.status == 200 and r.json() == {"forged": True}, r
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "success"
    assert 300 <= record["duration_ms"] < 2000 and record["billed_duration_ms"] >= 300, record
    assert gone(record["worker_pid"])
    assert worker_of(daemon, daemon.invoke("forger", {})) != record["worker_pid"]


def test_a_result_while_idle_kills_the_worker_and_no_invocation_pays(daemon: Daemon) -> None:
    r = daemon.invoke("forger", {"send": "late_result"})
    pid = worker_of(daemon, r)

    assert gone(pid)  # 200 ms later its thread wrote a result that nothing asked for
    daemon.wait_for_line(f"worker {pid} sent result while idle: killed")
    after = daemon.invoke("forger", {})
    assert after.status == 200 and worker_of(daemon, after) != pid, after
    assert daemon.record(r.headers["x-amzn-RequestId"])["outcome"] == "success"
    assert len(daemon.records()) == len({rec["request_id"] for rec in daemon.records()})


# --- output ----------------------------------------------------------------------------------------


def test_32_mb_without_a_newline_leaves_the_router_responsive(daemon: Daemon) -> None:
    started = time.monotonic()
    r, slowest, samples = while_healthy(daemon, lambda: daemon.invoke("no_newline", {"mb": 32}))
    elapsed = time.monotonic() - started

    assert r.status == 200, r
    assert samples >= 1 and slowest < 0.1, (slowest, samples, elapsed)
    rid = r.headers["x-amzn-RequestId"]
    assert daemon.record(rid)["outcome"] == "success"
    daemon.wait_for_line(f"REPORT RequestId: {rid}", timeout=10)
    # Cut into lines of 256 KiB, every byte kept.
    pieces = [line.split("\t", 1)[1] for line in map(untimed, daemon.lines)
              if line.startswith(f"[no_newline] {rid}\t")]
    assert [len(p) for p in pieces] == [256 * 1024] * 128
    assert set("".join(pieces)) == {"x"}


# --- a full stderr ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stalled(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("chatty", "untrusted.chatty", max_workers=1)
                       + function_toml("ok", "hostile.ok"))


def test_a_full_stderr_drops_function_log_lines_and_never_blocks(stalled: Daemon) -> None:
    assert metric(stalled, "headwater_log_lines_dropped_total") == 0
    stalled.reading.clear()  # nobody reads the daemon's stderr from here on: the pipe fills
    try:
        r, slowest, _ = while_healthy(stalled, lambda: stalled.invoke("chatty", {"mb": 8}))
        assert r.status == 200, r
        assert stalled.invoke("ok", {}).status == 200
        assert slowest < 0.1, slowest
        dropped = metric(stalled, "headwater_log_lines_dropped_total")
        assert dropped > 1000, dropped  # 8,192 lines into a 64 KiB pipe nobody reads
        assert stalled.record(r.headers["x-amzn-RequestId"])["outcome"] == "success"
    finally:
        stalled.reading.set()
    # Once it is read again, logs flow again, and no line was left half-written under another.
    again = stalled.invoke("ok", {})
    stalled.wait_for_line(f"REPORT RequestId: {again.headers['x-amzn-RequestId']}")
    assert not [line for line in stalled.lines if line.count("[chatty] ") + line.count("[ok] ") > 1]
