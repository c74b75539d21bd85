"""``/healthz`` and ``/readyz``, and a listener of their own served by a process of its own.

The event loop serves everything else; under a flood of connections its accept and read queues
grow, and a health check waiting in them would take a busy daemon for a dead one (with 2,000
connections invoking, a check on the main listener took 30 ms at the median and half a second at
p99). ``[server] health_listen`` is served by a small child process instead (its own interpreter,
so no lock is shared with the loop; a higher CPU priority where the daemon may set one). The
daemon sends it its readiness several times a second on a pipe; the child answers from the last
one, and answers ``/healthz`` with 503 when none has come for ``STALE_S`` (the loop is stuck, which
is what a liveness check is for). The pipe's end is the daemon's end, and the child's.

Run as ``python -m router.health HOST PORT``, reading JSON lines on stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from router.run.registry import Registry

SEND_EVERY_S = 0.25
STALE_S = 3.0
HEALTH_NICE = -10


def readiness(registry: Registry) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and body: ready, draining, or metering unavailable (503), with the
    isolation in force and what is broken that leaves the daemon serving (triggers, the store)."""
    details: dict[str, Any] = {"sandbox": registry.isolation.config.mode,
                               "memory_limits": registry.isolation.memory_limit}
    if problems := registry.mappings.health():
        details["triggers"] = problems
    if (problem := registry.asyncq.problem) is not None:
        details["async"] = problem
    if registry.draining:
        return 503, {"status": "draining", **details}
    if registry.meter.failing:
        return 503, {"status": "metering unavailable", **details}
    return 200, {"status": "ready", **details}


def answer(path: str, state: tuple[float, int, bytes] | None, now: float) -> tuple[int, bytes]:
    """The child's answer to ``path`` from the daemon's last state (when it came, /readyz's
    status and body)."""
    fresh = state is not None and now - state[0] <= STALE_S
    if path == "/healthz":
        return (200, b'{"status": "ok"}') if fresh else (503, b'{"status": "not responding"}')
    if path == "/readyz":
        if not fresh or state is None:
            return 503, b'{"status": "not responding"}'
        return state[1], state[2]
    return 404, b'{"message": "Not Found"}'


class HealthListener:
    """The daemon's side: the child process, and the state sent to it."""

    def __init__(self, registry: Registry, host: str, port: int) -> None:
        self.registry = registry
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.health", host, str(port)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=None, close_fds=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # Its first state before it listens: a check never finds it knowing nothing yet.
        self.proc.stdin.write(self._line())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().decode().strip()  # "listening PORT" or the error
        if not line.startswith("listening "):
            self.proc.wait()
            raise OSError(line or "the health listener did not start")
        self.port = int(line.split()[1])
        os.set_blocking(self.proc.stdin.fileno(), False)
        self._sending: asyncio.Task[None] | None = None

    def _line(self) -> bytes:
        status, body = readiness(self.registry)
        return json.dumps({"status": status, "body": body}).encode() + b"\n"

    def send(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self.proc.stdin.fileno(), self._line())  # a full pipe: the next one will do

    def start(self) -> None:
        self._sending = asyncio.create_task(self._send_every())

    async def _send_every(self) -> None:
        while True:
            self.send()
            await asyncio.sleep(SEND_EVERY_S)

    def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # its end of the pipe: it exits
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def child(host: str, port: int) -> int:
    with contextlib.suppress(OSError):  # ahead of the daemon's CPU use when the machine is full
        os.setpriority(os.PRIO_PROCESS, 0, HEALTH_NICE)
    latest: list[tuple[float, int, bytes] | None] = [None]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body = answer(self.path.partition("?")[0], latest[0], time.time())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a check every few seconds is not worth a log line

    server_class = ThreadingHTTPServer
    if ":" in host:
        class V6(ThreadingHTTPServer):
            address_family = socket.AF_INET6
        server_class = V6
    try:
        server = server_class((host, port), Handler)
    except OSError as e:
        print(f"cannot listen on {host}:{port}: {e.strerror}", flush=True)
        return 1
    server.daemon_threads = True

    def take(raw: bytes) -> None:
        state = json.loads(raw)
        latest[0] = (time.time(), state["status"], json.dumps(state["body"]).encode())

    take(sys.stdin.buffer.readline())  # the daemon's state as it starts this listener
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"listening {server.server_address[1]}", flush=True)
    for raw in sys.stdin.buffer:
        take(raw)
    return 0  # the daemon closed the pipe, or is gone


if __name__ == "__main__":
    sys.exit(child(sys.argv[1], int(sys.argv[2])))
