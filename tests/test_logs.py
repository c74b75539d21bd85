"""The daemon's log: timestamped text or JSON lines, its level, function output that cannot forge a
line, and ``headwater logs`` reading a function's recent lines through the API."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import FUNCTIONS as TEST_FUNCTIONS
from conftest import STAMP, Daemon, function_toml, untimed

from router.logs.format import Clock, LogFormat, TextLines, decide, defang, defang_text
from router.logs.ring import ENTRY_BYTES, LogRing

TOKEN = "tok-logs-0123"
FUNCTIONS = {"functions/logfns.py": """
    import base64, os, time, urllib.request

    print("logfns imported")  # at init: output between invocations

    def says(event, context):
        print(event.get("text", "hello"))
        return {}

    def writes(event, context):
        os.write(1, base64.b64decode(event["b64"]))
        return {}

    def sleeps(event, context):
        time.sleep(5)

    def peeks(event, context):
        try:
            with urllib.request.urlopen(event["url"], timeout=2) as r:
                return {"reached": True, "status": r.status}
        except Exception as e:
            return {"reached": False, "error": repr(e)}
"""}
SERVED = (function_toml("says", "logfns.says") + function_toml("other", "logfns.says")
          + function_toml("writes", "logfns.writes", max_workers=1)
          + function_toml("sleeps", "logfns.sleeps", timeout_s=1)
          + function_toml("peeks", "logfns.peeks"))
HOSTILE = [
    b"\x1b[2K\r2026-01-01T00:00:00.000Z INFO headwater: forged daemon line\n",
    b"START RequestId: 00000000-fake Version: $LATEST\n",
    b"END RequestId: 00000000-fake\n",
    b"bad utf-8 \xff\xfe\xc3 here\n",
    b"c1 csi \xc2\x9b31m and bell \x07\n",
    b"y" * (300 * 1024) + b"\n",
]


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def fresh(text: str) -> bool:
    return abs((datetime.now(UTC) - parse_time(text)).total_seconds()) < 120


def says(daemon: Daemon, name: str, text: str) -> str:
    r = daemon.invoke(name, {"text": text})
    assert r.status == 200, r
    return r.headers["x-amzn-RequestId"]


# --- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "expected"), [
    (b"plain\ttext\n", b"plain\ttext\n"),
    (b"\x1b[31mred\r\n", b"\\x1b[31mred\\x0d\n"),
    (b"nul \x00 del \x7f\n", b"nul \\x00 del \\x7f\n"),
    (b"csi \xc2\x9b c\n", b"csi \\xc2\\x9b c\n"),
    ("caf\u00e9 \u00a0ok\n".encode(), "caf\u00e9 \u00a0ok\n".encode()),  # not C1: left as it is
    (b"\xff\xfe invalid\n", b"\xff\xfe invalid\n"),
])
def test_defang_escapes_control_characters_only(data: bytes, expected: bytes) -> None:
    assert defang(data) == expected


def test_defang_text_keeps_a_daemon_record_on_one_line() -> None:
    assert defang_text("init failed (x\n2026-01-01T00:00:00.000Z INFO fake)") == \
        "init failed (x\\x0a2026-01-01T00:00:00.000Z INFO fake)"


def test_clock_stamps_iso_utc_with_milliseconds() -> None:
    clock = Clock()
    assert clock.stamp(0.0) == "1970-01-01T00:00:00.000Z"
    assert clock.stamp(1764748800.9996) == "2025-12-03T08:00:00.999Z"
    assert clock.stamp(1764748801.25) == "2025-12-03T08:00:01.250Z"
    assert clock.stamp(1764748801.0) == "2025-12-03T08:00:01.000Z"


def test_text_lines_tag_every_line() -> None:
    lines = TextLines("fn", stamped=False, clock=Clock())
    assert lines.output(0, "rid", b"a\nb\n") == b"[fn] rid\ta\n[fn] rid\tb\n"
    assert lines.platform(0, "rid", "END RequestId: rid\nREPORT RequestId: rid\n") == \
        b"[fn] END RequestId: rid\n[fn] REPORT RequestId: rid\n"


def test_journald_is_found_by_the_stream_it_names(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        named = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert decide("text", named, f.fileno()) == LogFormat("text", stamped=False, journal=True)
        assert decide("json", {}, f.fileno()) == LogFormat("json", stamped=True, journal=False)
        assert not decide("text", {"JOURNAL_STREAM": "1:2"}, f.fileno()).journal
        assert not decide("text", {"JOURNAL_STREAM": "junk"}, f.fileno()).journal


def test_ring_is_bounded_in_bytes_and_read_after_a_position() -> None:
    ring = LogRing(10 * (ENTRY_BYTES + 10))
    for i in range(25):
        ring.add(float(i), f"r{i}", "INFO", "function", b"%09d\n" % i)
    assert ring.size <= ring.limit and len(ring.entries) == 10
    assert [e.seq for e in ring.after(0, 0)] == list(range(16, 26))
    assert [e.seq for e in ring.after(20, 0)] == [21, 22, 23, 24, 25]
    assert [e.seq for e in ring.after(0, 23.0)] == [24, 25]
    assert list(ring.after(25, 0)) == []
    ring.add(99.0, "big", "INFO", "function", b"x" * 5000 + b"\n" + b"tail\n")
    assert list(ring.after(25, 0))[-1].text == b"tail\n" and ring.size <= ring.limit  # its end, whole lines


# --- against the daemon ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(SERVED, files=FUNCTIONS)


class FileDaemon(Daemon):
    """``headwater serve`` with extra flags, its stderr in a file (read as bytes, so that a line
    that is not UTF-8 is seen as such), its address from its daemon.json."""

    def start_with(self, *flags: str, journal: bool = False, timeout: float = 20.0) -> FileDaemon:
        """With ``journal``, the daemon is told its stderr is journald's stream, as systemd
        tells it (JOURNAL_STREAM names the file's device and inode)."""
        self.stderr_path = self.folder / "stderr.log"
        with self.stderr_path.open("wb") as stderr:
            st = os.fstat(stderr.fileno())
            env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal else None
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router", "serve", "--config", str(self.config_path),
                 "--listen", "127.0.0.1:0", *flags],
                stdout=subprocess.DEVNULL, stderr=stderr, cwd=self.folder, env=env)
        state = self.folder / "var" / "daemon.json"
        deadline = time.monotonic() + timeout
        while not state.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("daemon did not start:\n" + self.stderr_path.read_text())
            time.sleep(0.05)
        self.url = json.loads(state.read_text())["url"]
        return self

    def raw_lines(self) -> list[bytes]:
        return self.stderr_path.read_bytes().splitlines()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def file_daemon(tmp_path: Path) -> Iterator[Callable[..., FileDaemon]]:
    """A factory: ``file_daemon(server_toml, *flags)`` → a started ``FileDaemon`` serving the
    functions of this file; all are stopped at the end of the test."""
    started: list[FileDaemon] = []

    def make(server: str, *flags: str, journal: bool = False) -> FileDaemon:
        folder = tmp_path / f"d{len(started)}"
        shutil.copytree(TEST_FUNCTIONS, folder / "functions",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name, text in FUNCTIONS.items():
            (folder / name).write_text(textwrap.dedent(text))
        config = f"[server]\nshutdown_grace_s = 5\ndrain_delay_s = 0\n{server}\n{SERVED}"
        d = FileDaemon(folder, config).start_with(*flags, journal=journal)
        started.append(d)
        return d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def wait_for_raw(d: FileDaemon, text: bytes, timeout: float = 5.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = d.raw_lines()
        if any(text in line for line in lines):
            return lines
        time.sleep(0.02)
    raise AssertionError(f"no line with {text!r} in:\n" + d.stderr_path.read_text()[-3000:])


def test_text_lines_start_with_a_parseable_utc_timestamp(daemon: Daemon) -> None:
    rid = says(daemon, "says", "stamped-marker")
    report = daemon.wait_for_line(f"REPORT RequestId: {rid}")
    listening = daemon.wait_for_line("Headwater listening on")
    output = daemon.wait_for_line("stamped-marker")
    for line in (listening, output, report):
        m = STAMP.match(line)
        assert m is not None, line
        assert fresh(m[0].strip()), line
    assert untimed(listening).startswith("INFO headwater: Headwater listening on")
    assert untimed(output) == f"[says] {rid}\tstamped-marker"
    assert untimed(daemon.wait_for_line("[says] -\tlogfns imported")) == "[says] -\tlogfns imported"
    assert parse_time(STAMP.match(output)[0].strip()) <= parse_time(STAMP.match(report)[0].strip())  # type: ignore[index]


def test_under_journald_text_lines_carry_a_priority_and_no_timestamp(
        file_daemon: Callable[..., FileDaemon]) -> None:
    d = file_daemon("", journal=True)
    rid = says(d, "says", "journal-marker")
    lines = [line.decode() for line in wait_for_raw(d, f"REPORT RequestId: {rid}".encode())]
    assert not [line for line in lines if STAMP.match(line)], lines
    assert any(line.startswith("<6>INFO headwater: Headwater listening on") for line in lines)
    assert f"[says] {rid}\tjournal-marker" in lines
    priorities = {"DEBUG": "7", "INFO": "6", "WARNING": "4", "ERROR": "3"}
    for line in lines:  # the daemon's own lines start with their priority; a function's with [
        m = re.match(r"<(\d)>([A-Z]+) ", line)
        assert line.startswith("[") or (m is not None and priorities[m[2]] == m[1]), line


def test_json_lines_parse_one_object_each_with_request_id_and_function(
        file_daemon: Callable[..., FileDaemon]) -> None:
    d = file_daemon('log_format = "json"')
    rid = says(d, "says", "json-marker")
    slow = d.invoke("sleeps", {})
    assert slow.headers.get("X-Amz-Function-Error") == "Unhandled"
    slow_rid = slow.headers["x-amzn-RequestId"]
    lines = wait_for_raw(d, f"REPORT RequestId: {slow_rid}".encode())
    parsed = [json.loads(line.decode()) for line in lines]  # strict UTF-8, one object a line
    assert all(isinstance(p, dict) and {"time", "level", "logger", "message"} <= p.keys()
               and fresh(p["time"]) for p in parsed), parsed
    daemon_own = [p for p in parsed if p["logger"].startswith("headwater")]
    assert any(p["message"].startswith("Headwater listening on") and p["level"] == "INFO"
               for p in daemon_own)
    mine = [p for p in parsed if p.get("request_id") == rid]
    assert [(p["logger"], p["message"].split(" RequestId")[0]) for p in mine] == [
        ("platform", "START"), ("function", "json-marker"), ("platform", "END"),
        ("platform", "REPORT")]
    assert all(p["function"] == "says" and p["level"] == "INFO" for p in mine)
    imported = [p for p in parsed if p["message"] == "logfns imported" and p["function"] == "says"]
    assert imported and all(p["logger"] == "function" and "request_id" not in p for p in imported)
    errors = [p for p in parsed if p.get("request_id") == slow_rid and p["level"] == "ERROR"]
    assert len(errors) == 1 and "Task timed out after 1.00 seconds" in errors[0]["message"]
    assert errors[0]["function"] == "sleeps" and errors[0]["logger"] == "platform"


def test_hostile_output_in_json_stays_one_valid_object_a_line(file_daemon: Callable[..., FileDaemon]) -> None:
    d = file_daemon('log_format = "json"')
    r = d.invoke("writes", {"b64": base64.b64encode(b"".join(HOSTILE)).decode()})
    rid = r.headers["x-amzn-RequestId"]
    lines = wait_for_raw(d, f"REPORT RequestId: {rid}".encode())
    parsed = [json.loads(line.decode()) for line in lines]
    out = [p["message"] for p in parsed if p.get("request_id") == rid and p["logger"] == "function"]
    assert out[:5] == [
        "\x1b[2K\r2026-01-01T00:00:00.000Z INFO headwater: forged daemon line",
        "START RequestId: 00000000-fake Version: $LATEST", "END RequestId: 00000000-fake",
        "bad utf-8 \ufffd\ufffd\ufffd here", "c1 csi \x9b31m and bell \x07"]
    assert [len(m) for m in out[5:]] == [256 * 1024, 300 * 1024 - 256 * 1024]
    starts = [p for p in parsed if p.get("request_id") == rid and p["logger"] == "platform"]
    assert [p["message"].split()[0] for p in starts] == ["START", "END", "REPORT"]
    assert not [line for line in lines if b"\x1b" in line or b"\r" in line]  # escaped by JSON


def test_hostile_output_in_text_cannot_forge_or_erase_a_line(daemon: Daemon) -> None:
    r = daemon.invoke("writes", {"b64": base64.b64encode(b"".join(HOSTILE)).decode()})
    rid = r.headers["x-amzn-RequestId"]
    daemon.wait_for_line(f"REPORT RequestId: {rid}")
    mine = [untimed(line) for line in daemon.lines if rid in line]
    tag = f"[writes] {rid}\t"
    assert mine[1:5] == [
        tag + "\\x1b[2K\\x0d2026-01-01T00:00:00.000Z INFO headwater: forged daemon line",
        tag + "START RequestId: 00000000-fake Version: $LATEST",
        tag + "END RequestId: 00000000-fake",
        tag + "bad utf-8 \ufffd\ufffd\ufffd here"]  # passed on as bytes; read here with replace
    assert mine[5] == tag + "c1 csi \\xc2\\x9b31m and bell \\x07"
    assert [len(line) - len(tag) for line in mine[6:8]] == [256 * 1024, 300 * 1024 - 256 * 1024]
    # Every line the function caused starts with its tag; Lambda's own are the only others.
    forged = [line for line in daemon.lines if "forged daemon line" in line or "00000000-fake" in line]
    assert len(forged) == 3 and all(untimed(line).startswith(tag) for line in forged)
    assert [line for line in mine if not line.startswith(tag)] == [
        f"[writes] START RequestId: {rid} Version: $LATEST", f"[writes] END RequestId: {rid}",
        *[line for line in mine if line.startswith(f"[writes] REPORT RequestId: {rid}\t")]]
    assert not [line for line in daemon.lines if "\x1b" in line or "\r" in line]


def test_log_level_and_format_flags_override_the_config(file_daemon: Callable[..., FileDaemon]) -> None:
    d = file_daemon('log_level = "debug"\nlog_format = "text"',
                    "--log-level", "warning", "--log-format", "json")
    rid = says(d, "says", "level-marker")
    # A reload of a config that does not validate logs an error; SIGHUP's own lines are INFO.
    d.config_path.write_text(d.config_path.read_text() + "\n[server.nonsense]\n")
    os.kill(d.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
    lines = wait_for_raw(d, b"reload refused")
    parsed = [json.loads(line) for line in wait_for_raw(d, f"REPORT RequestId: {rid}".encode())]
    levels = {p["level"] for p in parsed if p["logger"].startswith("headwater")}
    assert levels == {"ERROR"}, lines
    # The function's lines are its log: the daemon's level does not filter them.
    assert any(p.get("request_id") == rid and p["message"] == "level-marker" for p in parsed)


def test_log_level_from_the_config_filters_daemon_lines(file_daemon: Callable[..., FileDaemon]) -> None:
    d = file_daemon('log_level = "error"')
    rid = says(d, "says", "quiet-marker")
    lines = [line.decode() for line in wait_for_raw(d, b"quiet-marker")]
    assert not [line for line in lines if untimed(line).startswith(("INFO ", "WARNING "))], lines
    d.stop()
    tail = d.stderr_path.read_text()
    assert "stopped" not in tail and "draining" not in tail  # INFO, filtered to the end
    assert f"[says] {rid}\tquiet-marker" in tail


# --- headwater logs ----------------------------------------------------------------------------


def cli(daemon: Daemon, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HEADWATER_"))}
    if token:
        env["HEADWATER_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "router", *args, "--url", daemon.url],
                          capture_output=True, text=True, timeout=60, env=env)


def test_headwater_logs_shows_an_invocations_output(daemon: Daemon) -> None:
    rid = says(daemon, "says", "cli-marker")
    daemon.wait_for_line(f"REPORT RequestId: {rid}")
    done = cli(daemon, "logs", "says")
    assert done.returncode == 0, done.stderr
    mine = [line for line in done.stdout.splitlines() if rid in line]
    assert [re.sub(r"^\S+ ", "", line).split(" RequestId")[0] for line in mine] == [
        "START", f"{rid}\tcli-marker", "END", "REPORT"]
    assert all(fresh(line.split(" ", 1)[0]) for line in mine)
    as_json = cli(daemon, "logs", "says", "--format", "json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    printed = [e for e in events if e["message"] == "cli-marker"]
    assert printed == [{"time": printed[0]["time"], "level": "INFO", "logger": "function",
                        "message": "cli-marker", "function": "says", "request_id": rid}]
    # Another function's lines are not in it.
    other = says(daemon, "other", "other-marker")
    daemon.wait_for_line(f"REPORT RequestId: {other}")
    assert other not in cli(daemon, "logs", "says").stdout
    assert "other-marker" in cli(daemon, "logs", "other").stdout


def test_headwater_logs_prints_hostile_output_escaped(daemon: Daemon) -> None:
    r = daemon.invoke("writes", {"b64": base64.b64encode(b"".join(HOSTILE[:1])).decode()})
    rid = r.headers["x-amzn-RequestId"]
    daemon.wait_for_line(f"REPORT RequestId: {rid}")
    done = cli(daemon, "logs", "writes")
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout  # nothing for the terminal to act on
    assert any("\\x1b[2K\\x0d" in line and "forged daemon line" in line
               for line in done.stdout.splitlines() if rid in line), done.stdout


def test_headwater_logs_since_leaves_out_older_lines(daemon: Daemon) -> None:
    old = says(daemon, "says", "before-since")
    daemon.wait_for_line(f"REPORT RequestId: {old}")
    time.sleep(3.1)
    new = says(daemon, "says", "after-since")
    daemon.wait_for_line(f"REPORT RequestId: {new}")
    recent = cli(daemon, "logs", "says", "--since", "3s").stdout
    assert "after-since" in recent and new in recent
    assert "before-since" not in recent and old not in recent
    assert "before-since" in cli(daemon, "logs", "says", "--since", "1h").stdout
    bad = cli(daemon, "logs", "says", "--since", "soon")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_headwater_logs_follow_sees_a_new_invocation(daemon: Daemon) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HEADWATER_"))}
    follower = subprocess.Popen(
        [sys.executable, "-m", "router", "logs", "says", "--follow", "--since", "1s",
         "--url", daemon.url], stdout=subprocess.PIPE, text=True, env=env)
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.append(line)
            if "follow-marker" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        time.sleep(1.0)  # the follower is waiting in its long poll by now
        rid = says(daemon, "says", "follow-marker")
        assert found.wait(10), seen
        assert any(rid in line and line.rstrip().endswith("\tfollow-marker") for line in seen)
        assert follower.poll() is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
        reader.join(5)
        assert follower.stdout is not None
        follower.stdout.close()


def test_logs_api_refuses_bad_queries_and_unknown_functions(daemon: Daemon) -> None:
    r = daemon.request("GET", "/headwater/logs/says?Wait=60")
    assert r.status == 400 and r.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert daemon.request("GET", "/headwater/logs/says?After=x").status == 400
    missing = daemon.request("GET", "/headwater/logs/nope")
    assert missing.status == 404 and missing.headers["x-amzn-ErrorType"] == "ResourceNotFoundException"
    started = time.monotonic()
    ring = daemon.request("GET", "/headwater/logs/says").json()
    waited = daemon.request("GET", f"/headwater/logs/says?After={ring['NextToken']}&Wait=0.5").json()
    assert waited == {"Events": [], "NextToken": ring["NextToken"]}
    assert 0.4 < time.monotonic() - started < 5


@pytest.fixture(scope="module")
def locked(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(SERVED, files=FUNCTIONS, server=f'tokens = ["{TOKEN}"]')


def test_logs_need_the_apis_credentials(locked: Daemon) -> None:
    r = locked.invoke("says", {"text": "secret-marker"}, headers={"Authorization": f"Bearer {TOKEN}"})
    rid = r.headers["x-amzn-RequestId"]
    locked.wait_for_line(f"REPORT RequestId: {rid}")
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        refused = locked.request("GET", "/headwater/logs/says", headers=headers)
        assert refused.status == 403, refused
        assert b"secret-marker" not in refused.body and "x-amzn-ErrorType" in refused.headers
    ok = locked.request("GET", "/headwater/logs/says", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status == 200 and "secret-marker" in ok.body.decode()
    without = cli(locked, "logs", "says")
    assert without.returncode == 1 and "403" in without.stderr and "secret-marker" not in without.stdout
    assert "secret-marker" in cli(locked, "logs", "says", token=TOKEN).stdout


def test_a_function_cannot_read_another_functions_log(locked: Daemon) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = locked.invoke("peeks", {"url": f"{locked.url}/headwater/logs/says"}, headers=auth)
    assert r.status == 200, r
    answer = r.json()
    assert answer.get("status") != 200, answer  # the sandbox keeps it off loopback


def test_a_daemon_record_after_a_short_write_leaves_every_json_line_whole(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(function_toml("floods", "noisy.floods", max_workers=1),
                    server='log_format = "json"')
    d.reading.clear()  # nobody reads the daemon's stderr: the pipe fills, a write comes up short
    try:
        r = d.invoke("floods", {"kib": 4096})
        assert r.status == 200, r
        # A reload writes a record of the daemon's while function lines wait in the backlog,
        # one of them half written.
        os.kill(d.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        time.sleep(0.5)
    finally:
        d.reading.set()
    d.wait_for_line("reloaded: nothing changed", timeout=20)
    broken = []
    for line in list(d.lines):
        try:
            json.loads(line)
        except ValueError:
            broken.append(line[:200])
    assert broken == []
