"""moto's standalone server in a subprocess, for tests that talk to S3 and SQS over real HTTP.

``MotoServer`` binds 127.0.0.1 on a free port, waits (up to ``READY_TIMEOUT``) until the server
answers, and exposes ``endpoint``. ``stop()`` and ``start()`` take it down and bring it back on
the same port, for tests of an endpoint that goes away; moto keeps its state in memory, so a
restarted server is empty, as is one after ``reset()``. The server's output goes to a log file in
a temporary folder (``log_path``), whose tail is put in the error if the server fails to start.

A subprocess rather than moto's ``ThreadedMotoServer``: stopping it really closes the port, and
its threads and warnings stay out of the test process.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

HOST = "127.0.0.1"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
# Another process can take a port between our probe closing it and moto binding it.
PORT_ATTEMPTS = 3
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def server_command() -> list[str]:
    script = Path(sys.executable).with_name("moto_server")
    return [str(script)] if script.exists() else [sys.executable, "-m", "moto.server"]


class MotoServer:
    def __init__(self, port: int | None = None) -> None:
        # Set once the server has run: from then on the port is part of the endpoint clients hold.
        self.port_fixed = port is not None
        self.port = port if port is not None else free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="moto-"))
        self.log_path = self.folder / "moto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            return
        for attempt in range(PORT_ATTEMPTS):
            try:
                self.spawn()
            except RuntimeError:
                # Only the first start may move to another port: a restart that moved would not
                # be the same endpoint coming back.
                if self.port_fixed or attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()
            else:
                self.port_fixed = True
                return

    def spawn(self) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        env.update(ENV)
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*server_command(), "-H", HOST, "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        try:
            self.wait_ready()
        except RuntimeError:
            self.stop()
            raise

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.05)
        raise RuntimeError(f"moto_server did not answer within {READY_TIMEOUT} s:\n{self.log_tail()}")

    def answers(self) -> bool:
        try:
            self.request("GET", "/moto-api/", timeout=1.0)
        except OSError:
            return False
        return True

    def request(self, method: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def reset(self) -> None:
        status, body = self.request("POST", "/moto-api/reset")
        if status != 200:
            raise RuntimeError(f"moto reset answered {status}: {body[:200]!r}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def log_tail(self, size: int = 4000) -> str:
        if self.log is not None:
            self.log.flush()
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def aws_section(endpoint: str) -> str:
    """config.toml's [aws] for a daemon whose triggers poll this server."""
    return (f'[aws]\nendpoint_url = "{endpoint}"\nregion = "us-east-1"\n'
            'access_key_id = "testing"\nsecret_access_key = "testing"\n\n')


def until(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """``check()``'s first true value, polled until ``timeout``; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

