"""The `headwater` command as a user runs it: serve's exit codes and drain, and invoke."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import Daemon, free_port, function_toml, second_listener

from router.cli.main import build_parser
from router.config import ServerConfig
from router.health import answer
from router.systemd import watchdog_interval

ROOT = Path(__file__).resolve().parent.parent


def headwater(*args: str, cwd: Path | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


@pytest.mark.parametrize(("toml", "message"), [
    ('[[functions]]\nname = "f"\nhandler = "app.handler"\ncode = "."\ntimeout_s = "x"\n',
     'functions[0].timeout_s: expected an integer from 1 to 900, got "x"'),
    ("[server]\nlisten = 5\n", "server.listen: expected a string, got 5"),
    ("[server]\nport = 5\n", "server.port: unknown key"),
    ("this is = not toml [", "not valid TOML"),
])
def test_invalid_config_exits_2_with_one_message(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(toml)
    result = headwater("serve", "--config", str(config))
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_config_exits_2(tmp_path: Path) -> None:
    result = headwater("serve", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_shipped_config_is_valid_from_any_directory(tmp_path: Path) -> None:
    """Whatever the user has added to it (the README's tutorial adds a function), the shipped
    config loads, and its paths resolve against its own folder, not the current one."""
    import tomllib

    from router import config

    raw = tomllib.loads((ROOT / "config.toml").read_text())
    loaded = config.load(ROOT / "config.toml", {})
    assert [Path(f.code) for f in loaded.functions] == [ROOT / f["code"] for f in raw["functions"]]
    metering = raw.get("metering", {}).get("path", "var/metering.jsonl")
    assert Path(loaded.metering.path) == ROOT / metering


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("returns", "outcomes.returns")
                       + function_toml("raises", "outcomes.raises"))


def test_invoke_prints_the_response(daemon: Daemon, tmp_path: Path) -> None:
    result = headwater("invoke", "returns", "--url", daemon.url, "--payload", '{"value": [1, 2]}')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [1, 2]
    event = tmp_path / "event.json"
    event.write_text('{"value": "from a file"}')
    result = headwater("invoke", "returns", "--url", daemon.url, "--payload", f"@{event}", "--log")
    assert json.loads(result.stdout) == "from a file"
    assert "START RequestId: " in result.stderr and "REPORT RequestId: " in result.stderr


def test_invoke_exits_non_zero_on_function_and_request_errors(daemon: Daemon) -> None:
    result = headwater("invoke", "raises", "--url", daemon.url)
    assert result.returncode == 1
    assert json.loads(result.stdout)["errorType"] == "KeyError"
    result = headwater("invoke", "nope", "--url", daemon.url)
    assert result.returncode == 1 and "ResourceNotFoundException" in result.stderr


def test_invoke_reports_an_unreachable_daemon() -> None:
    result = headwater("invoke", "x", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_sigterm_drains_in_flight_invocations(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(function_toml("sleeps", "outcomes.sleeps", timeout_s=10))
    result: dict[str, object] = {}
    caller = threading.Thread(target=lambda: result.update(r=d.invoke("sleeps", {"seconds": 1})))
    caller.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    caller.join()
    response = result["r"]
    assert response.status == 200 and response.json() == {"slept": 1}  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5
    rid = response.headers["x-amzn-RequestId"]  # type: ignore[attr-defined]
    assert d.record(rid)["outcome"] == "success"
    assert any("draining" in line for line in d.lines)


def test_sigterm_runs_the_invocations_queued_behind_the_running_one(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(function_toml("sleeps", "outcomes.sleeps", timeout_s=10, max_workers=1))
    d.invoke("sleeps", {"seconds": 0})  # warm: the queue waits behind one worker, not a start
    results: list[int] = []
    callers = [threading.Thread(target=lambda: results.append(
        d.invoke("sleeps", {"seconds": 0.5}).status)) for _ in range(3)]
    for caller in callers:
        caller.start()
    time.sleep(0.2)  # one runs, two are queued
    assert d.stop(signal.SIGTERM) == 0
    for caller in callers:
        caller.join()
    assert results == [200, 200, 200]  # accepted, so run: none turned away by the drain
    assert [r["outcome"] for r in d.records()].count("success") == 4


def test_sigterm_keeps_serving_through_the_drain_delay_and_answers_every_request(
        make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(function_toml("quick", "outcomes.returns", max_workers=2),
                    server="drain_delay_s = 1.5")
    statuses: list[int] = []
    failures: list[tuple[float, str]] = []
    stop = threading.Event()
    signalled: list[float] = []

    def client() -> None:
        while not stop.is_set():
            try:
                r = d.invoke("quick", {"value": 1}, timeout=5)
                statuses.append(r.status)
            except OSError as e:  # refused once the listener closed, after the delay
                failures.append((time.monotonic(), type(e).__name__))
                time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    signalled.append(time.monotonic())
    time.sleep(0.3)
    ready = d.request("GET", "/readyz")
    assert ready.status == 503 and ready.json()["status"] == "draining"
    during = d.invoke("quick", {"value": 2})
    assert during.status == 200 and during.headers.get("Connection") == "close"
    assert d.proc.wait(30) == 0
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) <= {200, 503}, Counter(statuses)
    # Nothing went wrong while the delay ran, nor while the invocations drained (new requests had
    # 503s then); once the listener closed, a new connection is refused, and none the kernel had
    # queued is reset.
    assert all(at >= signalled[0] + 1.4 for at, _ in failures), failures
    assert {kind for _, kind in failures} <= {"ConnectionRefusedError"}, Counter(failures)
    assert 503 in statuses or failures


def test_systemd_notify_watchdog_and_sighup(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The notify protocol against a socket the test binds, as systemd's: READY=1 once serving,
    WATCHDOG=1 every half WatchdogSec, RELOADING=1 and READY=1 around a SIGHUP's reload,
    STOPPING=1 at SIGTERM."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}
    d = make_daemon(function_toml("hi", "outcomes.returns"), env=env)
    got: list[str] = []

    def until_state(state: str) -> None:
        while state not in got:
            got.append(sock.recv(256).decode())

    until_state("READY=1")
    first = time.monotonic()
    got.clear()
    for _ in range(3):
        until_state("WATCHDOG=1")
        got.remove("WATCHDOG=1")
    assert time.monotonic() - first < 1.0  # every 0.1 s, not once
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    until_state("RELOADING=1")
    until_state("READY=1")
    d.wait_for_line("reloaded: nothing changed")
    assert d.proc.poll() is None and d.invoke("hi", {"value": 1}).status == 200
    d.proc.send_signal(signal.SIGTERM)
    until_state("STOPPING=1")
    assert d.proc.wait(30) == 0
    sock.close()


def unit_settings(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines()
                if "=" in line and not line.startswith("#"))


def test_the_unit_file_verifies_is_hardened_and_outlasts_the_drain(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "headwater.service").read_text()
    settings = unit_settings(text)
    assert (settings["Type"], settings["NotifyAccess"]) == ("notify", "main")
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    server = ServerConfig()
    assert int(settings["TimeoutStopSec"]) >= server.drain_delay_s + server.shutdown_grace_s + 10
    assert int(settings["WatchdogSec"]) > 2 * 3  # pinged every half, from a loop that may lag 3 s
    executable, *args = settings["ExecStart"].split()
    assert build_parser({}).parse_args(args).command == "serve"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here to verify the unit with")
    unit = tmp_path / "headwater.service"
    unit.write_text(text.replace(executable, str(Path(sys.executable).with_name("headwater"))))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                              text=True, timeout=60)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    exposure = float(security.stdout.rpartition("Overall exposure level for")[2].split()[1])
    assert exposure <= 4.0, security.stdout  # systemd's own scale: 10 unprotected, below 5 "OK"


@pytest.mark.parametrize(("environ", "interval"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "43"}, None),
    ({"WATCHDOG_USEC": "0"}, None), ({"WATCHDOG_USEC": "x"}, None), ({}, None)])
def test_watchdog_interval(environ: dict[str, str], interval: float | None) -> None:
    assert watchdog_interval(environ, 42) == interval


def test_sighup_reloads_functions_without_failing_a_request(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(function_toml("steady", "outcomes.echo", min_workers=1)
                    + function_toml("grows", "outcomes.echo", min_workers=1)
                    + function_toml("goes", "outcomes.returns"))
    def worker(name: str) -> tuple[object, object]:  # the host pid that ran it, and whether cold
        record = d.record(d.invoke(name, {}).headers["x-amzn-RequestId"])
        return record["worker_pid"], record["cold"]

    pid_of = {name: worker(name)[0] for name in ("steady", "grows")}
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            statuses.append(d.invoke("steady", {}).status)

    hammer = threading.Thread(target=load)
    hammer.start()
    text = d.config_path.read_text()
    text = text.replace(function_toml("grows", "outcomes.echo", min_workers=1),
                        function_toml("grows", "outcomes.echo", min_workers=1, memory_mb=256))
    text = text.replace(function_toml("goes", "outcomes.returns"),
                        function_toml("comes", "outcomes.returns"))
    d.config_path.write_text(text)
    assert d.proc is not None
    done = subprocess.run([sys.executable, "-m", "router", "reload", "--config", str(d.config_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and str(d.proc.pid) in done.stdout, done.stderr
    line = d.wait_for_line("reloaded:", timeout=15)
    assert "removed goes" in line and "added comes" in line and "changed grows" in line
    assert "steady" not in line
    time.sleep(0.3)
    stop.set()
    hammer.join()
    assert statuses and set(statuses) == {200}, Counter(statuses)
    assert d.invoke("comes", {"value": 1}).json() == 1
    assert d.invoke("goes", {}).status == 404
    assert d.invoke("grows", {}).json()["memory"] == "256"
    assert worker("grows")[0] != pid_of["grows"]  # a worker of the new configuration
    assert worker("steady") == (pid_of["steady"], False)  # its warm worker stayed
    # A file that fails validation leaves the running configuration in place.
    d.config_path.write_text(text + "[[functions]]\nname = 'bad name!'\n")
    d.proc.send_signal(signal.SIGHUP)
    d.wait_for_line("reload refused", timeout=15)
    assert d.invoke("comes", {"value": 2}).json() == 2


def test_the_health_listener_answers_from_its_own_process(make_daemon) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    d = make_daemon(function_toml("hi", "outcomes.returns"),
                    server=f'health_listen = "127.0.0.1:{port}"\ndrain_delay_s = 1')
    checker = second_listener(d, port, f"health checks on http://127.0.0.1:{port}/readyz")

    def get(path: str) -> tuple[int, dict[str, object]]:
        r = checker.request("GET", path)
        return r.status, r.json()

    assert get("/healthz") == (200, {"status": "ok"})
    status, body = get("/readyz")
    assert status == 200 and body["status"] == "ready" and body["sandbox"] == "bubblewrap"
    assert get("/2015-03-31/functions/hi/invocations")[0] == 404  # health only
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert get("/readyz") == (503, {**body, "status": "draining"})
    assert d.proc.wait(30) == 0


@pytest.mark.parametrize(("path", "state", "now", "expected"), [
    ("/healthz", (100.0, 200, b"{}"), 101.0, 200),
    ("/healthz", (100.0, 503, b"{}"), 101.0, 200),  # alive, though draining
    ("/healthz", (100.0, 200, b"{}"), 104.0, 503),  # no word from the loop for 4 s
    ("/healthz", None, 0.0, 503),
    ("/readyz", (100.0, 503, b'{"status": "draining"}'), 100.5, 503),
    ("/readyz", (100.0, 200, b"{}"), 110.0, 503),
    ("/other", (100.0, 200, b"{}"), 100.0, 404),
])
def test_health_answers(path: str, state: tuple[float, int, bytes] | None, now: float,
                        expected: int) -> None:
    assert answer(path, state, now)[0] == expected
