"""Fixtures that run the real daemon as a subprocess on an ephemeral port, with real workers, and
a fresh database on the machine's PostgreSQL for each test run."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from multidict import CIMultiDict

FUNCTIONS = Path(__file__).with_name("functions")
RUNTIME = f"python3.{sys.version_info.minor}"
LISTENING = re.compile(r"listening on (https?://\S+)")
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def untimed(line: str) -> str:
    """A text log line without the timestamp it starts with."""
    m = STAMP.match(line)
    return line[m.end():] if m else line


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = CIMultiDict(headers)  # header names are case-insensitive
        self.body = body

    def json(self) -> object:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers} {self.body[:300]!r}>"


class Daemon:
    """``headwater serve`` in a subprocess; its stderr is collected line by line in ``lines``
    (clear ``reading`` to stop reading it, so that the daemon's stderr fills; set it to go on)."""

    def __init__(self, folder: Path, config: str, command: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        # ``command`` runs the daemon some other way than this interpreter (as another user).
        self.command = command or [sys.executable]
        self.env = env
        self.folder = folder
        self.config_path = folder / "config.toml"
        self.config_path.write_text(config)
        self.lines: list[str] = []
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.reading = threading.Event()
        self.reading.set()

    def start(self, timeout: float = 20.0) -> Daemon:
        self.proc = subprocess.Popen(
            [*self.command, "-m", "router", "serve", "--config", str(self.config_path),
             "--listen", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.folder, env=self.env)
        listening = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for raw in self.proc.stderr:
                self.reading.wait()
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                m = LISTENING.search(line)
                if m:
                    self.url = m[1]
                    listening.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("daemon did not start:\n" + "\n".join(self.lines))
        return self

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()

    def invoke(self, name: str, payload: object = None, *, raw: bytes | None = None,
               headers: dict[str, str] | None = None, timeout: float = 30) -> Response:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        return self.request("POST", f"/2015-03-31/functions/{name}/invocations", body,
                            headers, timeout)

    def records(self) -> list[dict[str, object]]:
        path = self.folder / "var" / "metering.jsonl"
        if not path.exists():
            return []
        # The daemon may be writing: a last line without its newline is not a record yet.
        whole = path.read_text().rpartition("\n")[0]
        return [json.loads(line) for line in whole.splitlines()]

    def record(self, request_id: str) -> dict[str, object]:
        matches = [r for r in self.records() if r["request_id"] == request_id]
        assert len(matches) == 1, f"{len(matches)} metering records for {request_id}"
        return matches[0]

    def printed(self, marker: str) -> list[Any]:
        """What the functions printed as ``MARKER {json}`` lines, decoded, in order."""
        out = []
        for line in list(self.lines):
            _, found, rest = line.partition(marker + " ")
            if found:
                out.append(json.loads(rest))
        return out

    def wait_for_line(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line with {text!r} in:\n" + "\n".join(self.lines[-50:]))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            if self.proc.poll() is not None:
                self._reader.join(5)
                assert self.proc.stderr is not None
                self.proc.stderr.close()


def free_port() -> int:
    """A loopback TCP port free at the moment (for a second listener the daemon binds)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def second_listener(daemon: Daemon, port: int, log_line: str) -> Daemon:
    """A client of another address of ``daemon`` (metrics_listen, health_listen), once its log
    says it listens."""
    daemon.wait_for_line(log_line)
    client = Daemon(daemon.folder, daemon.config_path.read_text())
    client.url = f"http://127.0.0.1:{port}"
    return client


def function_toml(name: str, handler: str, code: str = "functions", **options: object) -> str:
    return functions_table({"name": name, "handler": handler, "code": code, "runtime": RUNTIME,
                            **options})


def functions_table(keys: dict[str, object]) -> str:
    """One ``[[functions]]`` table of config.toml with these keys (a dict value: an inline table)."""
    lines = []
    for key, value in keys.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "[[functions]]\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def make_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Daemon]]:
    """A factory: ``make_daemon(functions_toml, files={"functions/x.py": src})`` → a started
    daemon whose code folder ``functions`` holds tests/functions plus ``files``; all are stopped
    at the end of the module."""
    started: list[Daemon] = []

    def make(functions: str, files: dict[str, str] | None = None, server: str = "",
             before_start: Callable[[Path], None] | None = None,
             env: dict[str, str] | None = None) -> Daemon:
        folder = tmp_path_factory.mktemp("daemon")
        shutil.copytree(FUNCTIONS, folder / "functions",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name, text in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(textwrap.dedent(text))
        if before_start is not None:
            before_start(folder)
        grace = "" if "shutdown_grace_s" in server else "shutdown_grace_s = 10\n"
        # No load balancer to wait for; the tests of the delay set it.
        grace += "" if "drain_delay_s" in server else "drain_delay_s = 0\n"
        config = f"[server]\n{grace}{server}\n{functions}"
        daemon = Daemon(folder, config, env=env).start()
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        if daemon.proc and daemon.proc.stderr and not daemon.proc.stderr.closed:
            daemon.stop(signal.SIGKILL)


# The machine's PostgreSQL (loopback, trust authentication); HEADWATER_TEST_POSTGRES names another.
POSTGRES = os.environ.get("HEADWATER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The URL of a database made for this test run, dropped at its end."""
    import asyncpg

    name = f"headwater_test_{os.getpid()}_{secrets.token_hex(3)}"

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(f"{POSTGRES}/postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def admin(statement: str) -> None:
        # In a thread of its own: the fixture may be set up from inside a test's event loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, run(statement)).result()

    admin(f"CREATE DATABASE {name}")
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        admin(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On a failure, show the tail of each daemon's log: most failures are explained there."""
    report = yield
    if report.failed and call.when == "call":
        daemon = item.funcargs.get("daemon") if hasattr(item, "funcargs") else None
        if isinstance(daemon, Daemon):
            report.sections.append(("daemon log", "\n".join(daemon.lines[-60:])))
    return report
