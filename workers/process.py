"""One worker process as the router sees it: spawn it, send it invocations, hear what it says.

A worker gets three pipes: one for frames from the router, one for frames to the router, and one
that is both its stdout and its stderr. The frame pipes are file descriptors of their own, so nothing
the function prints can reach them. The router's ends are non-blocking and read with
``loop.add_reader``; a frame that does not fit in the pipe at once is finished by ``add_writer``.
Everything the worker says is passed to its ``Listener``, which decides what to do, except a frame
that does not fit the worker's state: nothing such a worker says can be trusted, so it is killed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import msgspec

from workers import protocol
from workers.cgroups import Cgroup
from workers.protocol import InitError, Ready, Result
from workers.sandbox import Sandbox

log = logging.getLogger("headwater.worker")

BOOTSTRAP = str(Path(__file__).with_name("bootstrap.py"))
READ_SIZE = 1 << 16  # 64 KiB: larger reads allocate a larger buffer on every call
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def python_argv(python: str, bootstrap: str = BOOTSTRAP) -> list[str]:
    # -I: the bootstrap's folder stays off sys.path; -S: so do the site-packages of the
    # interpreter (the runtime's packages are put there by the bootstrap); -u: like Lambda's
    # runtime, print() reaches the log at once and in order with os.write and logging, rather than
    # when a buffer fills.
    return [python, "-I", "-S", "-u", bootstrap]


EXIT_REPORT_S = 1.0  # how long a fork server may take to report the exit of its worker


def kill_group(pid: int) -> None:
    """SIGKILL a process and everything it started (each worker leads its own process group).

    Only for a process whose pid cannot have been reused: one not yet reaped, or whose group still
    has members (a pid number stays taken while it names a live group)."""
    if pid <= 0:  # never a broadcast: a pid a fork server gave may be anything
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def pidfd_kill(pidfd: int) -> None:
    """SIGKILL exactly the process a pidfd refers to: never another that took its pid."""
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def pidfd_exited(pidfd: int) -> bool:
    """Whether the process has exited (a pidfd polls readable from then on)."""
    return bool(select.select([pidfd], [], [], 0)[0])


def read_output(fd: int, deliver: Callable[[bytes], None]) -> bool:
    """One read of a process's output pipe, given to ``deliver``; False once the pipe is at its
    end (the reader is then the caller's to remove)."""
    try:
        data = os.read(fd, READ_SIZE)
    except BlockingIOError:
        return True
    if data:
        deliver(data)
    return bool(data)


class WorkerSpec(msgspec.Struct, frozen=True):
    """How to start the workers of one function (through its fork server)."""

    python: str
    env: dict[str, str]  # the workers', given to the fork server once it runs in the sandbox
    cwd: str
    # The PATH that bubblewrap, setpriv and the fork server start under (the daemon's): they
    # run before the sandbox holds, some with privilege, so nothing of ``env`` reaches them.
    host_path: str = os.defpath
    loader: tuple[str, ...] = ()  # what runs ``python`` (an image's sandbox: the host's loader)
    fork: bool = True  # fork warm workers from an imported module; else exec a fresh interpreter
    # What each worker execs instead of the Python bootstrap: a Runtime API client (ApiWorker).
    command: tuple[str, ...] = ()
    sandbox: Sandbox | None = None
    memory_mb: int = 128  # the cgroup limit of each worker and of the fork server
    pids_max: int = 1024
    nofile: int = 1024


class Listener(Protocol):
    def worker_ready(self, worker: Worker) -> None: ...
    def worker_init_failed(self, worker: Worker, error_type: str, payload: bytes) -> None: ...
    def worker_result(self, worker: Worker, result: Result) -> None: ...
    # A response in Lambda's streaming mode begins: the limit on its bytes; ``resume`` is called
    # when the caller has caught up after a chunk was refused (``worker_chunk`` said False).
    def worker_stream(self, worker: Worker, content_type: str, resume: Callable[[], None]) -> int: ...
    def worker_chunk(self, worker: Worker, data: bytes) -> bool: ...
    def worker_output(self, worker: Worker, data: bytes) -> None: ...
    def worker_broken(self, worker: Worker) -> None: ...
    def worker_exited(self, worker: Worker, returncode: int) -> None: ...


class Worker:
    __slots__ = ("pid", "listener", "tag", "state", "job", "deadline", "killed", "rss_mb", "cgroup", "limits",
                 "spawned", "init_duration_ms", "idle_since", "invocations", "gone", "_in_fd",
                 "_out_fd", "_log_fd", "_statm_fd", "_pidfd", "_reader", "_pending", "_loop")

    def __init__(self, listener: Listener, tag: object = None) -> None:
        self.listener = listener
        self.tag = tag  # the listener's own label (the pool's: the configuration it runs)
        self.state = "starting"  # → idle ⇄ busy → stopping → dead
        self.job: object | None = None  # the listener's invocation while busy
        self.pid = 0  # known once the process is started
        self.deadline = math.inf  # monotonic time by which the current job (or init) must finish
        self.killed: str | None = None  # why it was killed: "timeout", "oom" or "protocol"
        self.rss_mb = 0  # as last measured by rss()
        self.cgroup: Cgroup | None = None  # its memory and pids limits, where cgroups are had
        self.limits: asyncio.Future[Cgroup] | None = None  # while it is being put in its cgroup
        self.spawned = time.monotonic()
        self.init_duration_ms = 0.0
        self.idle_since = 0.0
        self.invocations = 0
        self._loop = asyncio.get_running_loop()
        self.gone: asyncio.Future[int] = self._loop.create_future()  # the exit status, once reaped
        self._in_fd = self._out_fd = self._log_fd = self._statm_fd = self._pidfd = -1
        self._pending = b""
        self._reader = protocol.FrameReader()

    def attach(self, pidfd: int, pid: int, fds: tuple[int, ...], init_deadline: float) -> None:
        """Take over a started worker: a pidfd for it, its pid as the host sees it, and its pipe
        ends (to it, from it, its output).

        The pidfd is what the router signals and watches: the worker's parent is its fork server,
        which runs the function's code, so the pid alone may be reaped and reused (by another
        function's worker) without the router hearing of it, and an exit the fork server does not
        report is still seen here."""
        self._in_fd, self._out_fd, log_fd = fds
        for fd in (self._in_fd, self._out_fd):
            os.set_blocking(fd, False)
        self._loop.add_reader(self._out_fd, self._on_frames)
        self._take(pidfd, pid, log_fd, init_deadline)

    def _take(self, pidfd: int, pid: int, log_fd: int, init_deadline: float) -> None:
        """What every kind of worker has: its identity, its output, its deadline."""
        self.pid = pid
        self._pidfd = pidfd
        self.deadline = init_deadline
        self._log_fd = log_fd
        os.set_blocking(log_fd, False)
        self._loop.add_reader(log_fd, self._on_output)
        self._loop.add_reader(pidfd, self._on_pidfd)

    def exited(self, returncode: int) -> None:
        """The process is reaped (by the router, or by the fork server that is its parent)."""
        if self.state == "dead":
            return
        self.drain_output()
        self._kill_all()  # what it started may outlive it (a handler that forked and left)
        self.state = "dead"
        if self.cgroup is not None:
            if self.killed is None and self.cgroup.oom_kills():
                self.killed = "oom"  # the kernel, not the router, stopped it at memory_mb
            self.cgroup.remove()
        for fd in (self._out_fd, self._log_fd, self._pidfd):
            if fd >= 0:
                self._loop.remove_reader(fd)
        self._close_input()
        for fd in (self._out_fd, self._log_fd, self._statm_fd, self._pidfd):
            if fd >= 0:
                os.close(fd)
        self._statm_fd = self._pidfd = -1
        self.gone.set_result(returncode)
        self.listener.worker_exited(self, returncode)

    # --- the router's side -----------------------------------------------------------------

    def invoke(self, job: object, message: protocol.Invoke, deadline: float) -> None:
        self.state = "busy"
        self.job = job
        self.deadline = deadline
        self.invocations += 1
        self._send(protocol.encode_invoke(message))

    def stop(self) -> None:
        """Ask the worker to exit (it does when its input closes); ``kill`` if it will not."""
        if self.state in ("stopping", "dead"):
            return
        self.state = "stopping"
        self._close_input()
        self._loop.call_later(2.0, self.kill)  # Lambda's shutdown phase gets 2 s too

    def kill(self, reason: str | None = None) -> None:
        """SIGKILL the worker and everything it started; ``reason`` is kept in ``killed``."""
        if reason is not None:
            self.killed = reason
        if self.state != "dead":
            self._kill_all()

    def _kill_all(self) -> None:
        """SIGKILL the worker and what it started, by identities that cannot have been reused."""
        if self._pidfd < 0:
            return
        if not pidfd_exited(self._pidfd):
            kill_group(self.pid)  # its leader lives: the group is its own
        pidfd_kill(self._pidfd)
        if self.cgroup is not None:  # a group whose leader is gone: found by its cgroup instead
            self.cgroup.kill()

    def _on_pidfd(self) -> None:
        """The process exited; its fork server, its parent, reports how (or is given a moment)."""
        self._loop.remove_reader(self._pidfd)
        if self.state != "dead":
            self._loop.call_later(EXIT_REPORT_S, self._unreported)

    def _unreported(self) -> None:
        if self.state != "dead":
            log.warning("worker %d exited and its fork server did not say so: taken as killed", self.pid)
            self.exited(-signal.SIGKILL)

    def rss(self) -> int:
        """The worker's resident memory now, in MB (0 if it is gone)."""
        # Polled every tick for each busy worker: the file stays open, so a poll is one pread.
        if self.state == "dead":
            return 0
        try:
            if self._statm_fd < 0:
                self._statm_fd = os.open(f"/proc/{self.pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            pages = int(os.pread(self._statm_fd, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return 0
        self.rss_mb = pages * PAGE_SIZE // (1024 * 1024)
        return self.rss_mb

    def peak_mb(self) -> int:
        """The most memory it has held (with what it started, where a cgroup counts it), in MB."""
        if self.cgroup is not None:
            return self.cgroup.peak_mb()
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
            return int(status.split("VmHWM:")[1].split()[0]) // 1024
        except (OSError, IndexError, ValueError):
            return 0

    def drain_output(self) -> None:
        """Read what the worker wrote to stdout/stderr that has not been read yet."""
        while True:
            try:
                data = os.read(self._log_fd, READ_SIZE)
            except (BlockingIOError, OSError):
                return
            if not data:
                return
            self.listener.worker_output(self, data)

    # --- the worker's side -----------------------------------------------------------------

    def _send(self, frame: bytes) -> None:
        try:
            n = os.write(self._in_fd, frame)
        except BlockingIOError:
            n = 0
        except OSError:  # the worker is gone; its exit is reported by whoever reaps it
            return
        if n < len(frame):
            self._pending = frame[n:]
            self._loop.add_writer(self._in_fd, self._send_pending)

    def _send_pending(self) -> None:
        try:
            n = os.write(self._in_fd, self._pending)
        except BlockingIOError:
            return
        except OSError:
            n = len(self._pending)
        self._pending = self._pending[n:]
        if not self._pending:
            self._loop.remove_writer(self._in_fd)

    def _on_frames(self) -> None:
        try:
            data = os.read(self._out_fd, READ_SIZE)
        except BlockingIOError:
            return
        if not data:  # the worker closed its channel: it is exiting or broken; its exit decides
            self._loop.remove_reader(self._out_fd)
            if self.state != "dead":
                self._loop.call_later(1.0, self.kill)
            return
        try:
            frames = self._reader.feed(data)
        except protocol.FrameTooLarge as e:
            self._broke(f"a frame of {e.args[0]} bytes")
            return
        for frame in frames:
            try:
                message = protocol.decode_from_worker(frame)
            except msgspec.DecodeError as e:
                self._broke(f"a frame that is not one ({e})")
                return
            # The worker's code is the function's: a frame it forged, or one out of turn, may
            # come at any time, and only a frame that fits the worker's state is taken.
            match message:
                case Result() if self.state == "busy" and \
                        len(message.payload) <= protocol.MAX_RESPONSE:
                    if message.output_pending:
                        self.drain_output()
                    self.state = "idle"
                    self.listener.worker_result(self, message)
                case Ready() if self.state == "starting":
                    if self.limits is None or self.limits.done():
                        self._ready()
                    else:  # ready once its cgroup holds it, not before
                        self.limits.add_done_callback(lambda _: self._ready())
                case InitError() if self.state == "starting":
                    self.drain_output()
                    self.init_duration_ms = (time.monotonic() - self.spawned) * 1000
                    self.state = "stopping"
                    self.listener.worker_init_failed(self, message.error_type, bytes(message.payload))
                case _:
                    self._broke(f"{type(message).__name__.lower()} while {self.state}")
                    return

    def _ready(self) -> None:
        if self.state != "starting" or self.killed:
            return
        self.init_duration_ms = (time.monotonic() - self.spawned) * 1000
        self.state = "idle"
        self.listener.worker_ready(self)

    def _broke(self, what: str) -> None:
        """The worker said something that does not fit its state: a channel that cannot be
        trusted with another invocation. It is killed; its exit ends its invocation, if any, as
        a crash."""
        log.warning("worker %d sent %s: killed", self.pid, what)
        self._loop.remove_reader(self._out_fd)
        self.kill("protocol")
        self.listener.worker_broken(self)

    def _on_output(self) -> None:
        if not read_output(self._log_fd, lambda data: self.listener.worker_output(self, data)):
            self._loop.remove_reader(self._log_fd)

    def _close_input(self) -> None:
        if self._in_fd >= 0:
            if self._pending:
                self._loop.remove_writer(self._in_fd)
                self._pending = b""
            os.close(self._in_fd)
            self._in_fd = -1

    def __repr__(self) -> str:
        return f"<Worker pid={self.pid} {self.state}>"
