"""The router's handle on a function's fork server (``bootstrap.py forkserver``).

The fork server is a separate, single-threaded process, started with exec like any worker, that
imports the function's module once and then forks a ready worker whenever it is asked, so every
worker after the first starts warm in a millisecond or two instead of paying the interpreter start
and the imports again. The router itself never forks.

Control messages are JSON datagrams on a SOCK_SEQPACKET socket pair; a forked worker's pipe ends
arrive with its ``forked`` message as SCM_RIGHTS. The fork server is the workers' parent, so it
reaps them and reports each exit status, which is passed to that ``Worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers import seccomp
from workers.cgroups import Cgroup, Tree
from workers.process import BOOTSTRAP, Worker, WorkerSpec, kill_group, pidfd_kill, python_argv, read_output
from workers.sandbox import Sandbox, bootstrap_path, has_default_route, pasta_argv
from workers.sandbox import argv as sandbox_argv

log = logging.getLogger("headwater.forkserver")

SECCOMP = seccomp.program()  # None on a machine whose system calls it does not know


class InitFailed(Exception):
    """The fork server could not import the function; ``error`` is Lambda's error object."""

    def __init__(self, error_type: str, error: dict[str, object]) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.error = error


class ForkServerGone(Exception):
    """The fork server exited before it answered (its exit status, when known, is the arg)."""


class Retired(Exception):
    """The function's code or settings changed while this waited for the old fork server."""


class ForkFailed(Exception):
    """The fork server could not fork this one worker (out of processes or descriptors)."""


class SandboxFailed(Exception):
    """The function's sandbox could not be set up; the message says which part failed."""


# A forked worker: its pid in the fork server's namespace and on the host, its pipes (and, for a
# Runtime API worker, the socket it is served on), its pidfd.
Forked = tuple[int, int, tuple[int, ...], int]


async def _read_all(fd: int) -> bytes:
    """Everything written to a pipe until its writers close it, without blocking the loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []

    def readable() -> None:
        chunk = os.read(fd, 4096)
        if chunk:
            chunks.append(chunk)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _route_table(pid: int) -> str:
    """The routes of a process's network namespace (procfs: answered at once, never blocks)."""
    return Path(f"/proc/{pid}/net/route").read_text()


def _pidfd_pid(pidfd: int) -> int:
    """The host pid of the process a pidfd refers to (its fdinfo gives it in our namespace)."""
    with open(f"/proc/self/fdinfo/{pidfd}") as info:
        for line in info:
            if line.startswith("Pid:"):
                return int(line.split()[1])
    raise OSError(0, "not a pidfd")


class ForkServer:
    """``label`` names its cgroups; ``tree`` holds them (None: no cgroups); ``output`` gets what
    it prints (the module's import output) — never the daemon's own stderr, which a hostile
    module could fill or flood."""

    def __init__(self, label: str = "fn", tree: Tree | None = None,
                 output: Callable[[bytes], None] = lambda data: None) -> None:
        self._loop = asyncio.get_running_loop()
        self.label = label
        self.tree = tree
        self.output = output
        self.cgroup: Cgroup | None = None
        # pasta, which holds the sandbox's network namespace
        self.network: asyncio.subprocess.Process | None = None
        self._log_fd = -1
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.gone: asyncio.Future[int] = self._loop.create_future()  # its exit status
        self.pid = 0
        self._sock: socket.socket | None = None
        # Fork requests by id: a reply is matched to its request, never to its position.
        self._forks: dict[int, asyncio.Future[Forked]] = {}
        self._ids = itertools.count()
        self._outbox: deque[bytes] = deque()  # requests the socket had no room for yet
        self._workers: dict[int, Worker] = {}
        self.closed = False
        self.retiring = False
        # Nobody may be waiting when it fails; the failure is still handled, not "never retrieved".
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def start(self, spec: WorkerSpec, deadline: float) -> None:
        """Start the process; a failure to start is its init failure, seen by every waiter."""
        try:
            await asyncio.wait_for(self._start(spec), max(0.0, deadline - time.monotonic()))
        except (OSError, SandboxFailed, TimeoutError) as e:
            self.kill()
            self.close()
            if not self.ready.done():
                self.ready.set_exception(e if not isinstance(e, TimeoutError) else
                                         SandboxFailed("the sandbox did not start in time"))

    async def _start(self, spec: WorkerSpec) -> None:
        self.spec = spec
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        log_r, log_w = os.pipe()
        sandbox = spec.sandbox
        bootstrap = BOOTSTRAP if sandbox is None else bootstrap_path(sandbox)
        mode = "api" if spec.command else "fork" if spec.fork else "exec"
        # The label is there for ps and top: which function a fork server serves.
        command = [*spec.loader, *python_argv(spec.python, bootstrap), "forkserver",
                   str(theirs.fileno()), mode, self.label, *spec.command]
        handshake: tuple[int, int] | None = None
        if sandbox is not None:
            info_r, info_w = os.pipe()
            block_r, block_w = os.pipe()
            handshake = (info_r, block_w)
            passed: tuple[int, ...] = (theirs.fileno(), info_w, block_r)
            filter_fd = None
            if SECCOMP is not None:
                filter_fd = os.memfd_create("seccomp", os.MFD_CLOEXEC)
                os.write(filter_fd, SECCOMP)
                os.lseek(filter_fd, 0, os.SEEK_SET)
                passed += (filter_fd,)
            command = sandbox_argv(sandbox, command, info_w, block_r, seccomp_fd=filter_fd)
        else:
            passed = (theirs.fileno(),)
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=log_w, stderr=log_w,
                env={"PATH": spec.host_path}, cwd=spec.cwd if sandbox is None else "/",
                pass_fds=passed, start_new_session=True)
            mine.send(json.dumps(spec.env).encode())  # its first message (see bootstrap)
        except BaseException:
            mine.close()
            os.close(log_r)
            if handshake is not None:
                os.close(handshake[0])
                os.close(handshake[1])
            raise
        finally:
            theirs.close()
            os.close(log_w)
            for fd in passed[1:]:
                os.close(fd)
        self.pid = proc.pid
        self._log_fd = log_r
        os.set_blocking(log_r, False)
        self._loop.add_reader(log_r, self._on_output)
        reaper = asyncio.ensure_future(proc.wait())
        reaper.add_done_callback(lambda t: t.cancelled() or self._gone(t.result()))
        if self.closed:  # retired while it was starting: it will never be asked for anything
            mine.close()
            self.kill()
            for fd in handshake or ():
                os.close(fd)
            return
        mine.setblocking(False)
        self._sock = mine
        self._loop.add_reader(mine.fileno(), self._on_message)
        if handshake is not None:
            await self._enter(spec, *handshake)

    async def _enter(self, spec: WorkerSpec, info_r: int, block_w: int) -> None:
        """Between bubblewrap's set-up and the fork server's start: put the sandbox in its
        cgroup, set its rlimits and attach its network, then let it go on."""
        assert spec.sandbox is not None
        try:
            info = await _read_all(info_r)
            try:
                pid = json.loads(info)["child-pid"]
            except (ValueError, KeyError, TypeError):
                raise SandboxFailed("bubblewrap could not build the sandbox (see the log)") from None
            if self.tree is not None:
                self.cgroup = self.tree.make(self.label, spec.memory_mb, spec.pids_max)
                self.cgroup.add(pid)
            for limit, value in ((resource.RLIMIT_NOFILE, spec.nofile),
                                 (resource.RLIMIT_FSIZE, spec.sandbox.tmp_mb * 1024 * 1024)):
                resource.prlimit(pid, limit, (value, value))
            if spec.sandbox.network.mode == "default":
                await self._attach_network(spec.sandbox, pid, time.monotonic() + 5)
            os.write(block_w, b"go")
        finally:
            os.close(info_r)
            os.close(block_w)

    async def _attach_network(self, sandbox: Sandbox, pid: int, deadline: float) -> None:
        netns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        opened = [netns]
        try:
            userns = None
            if sandbox.uid is None:
                userns = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
                opened.append(userns)
            pasta = await asyncio.create_subprocess_exec(
                *pasta_argv(sandbox, netns, userns), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=opened)
        finally:
            for fd in opened:
                os.close(fd)
        self.network = pasta
        # pasta says nothing when it is ready: the namespace's default route says it.
        while not has_default_route(_route_table(pid)):
            if pasta.returncode is not None or time.monotonic() > deadline:
                self._stop_network()
                assert pasta.stderr is not None
                err = await pasta.stderr.read(4096) if pasta.returncode is not None else b""
                reason = err.decode(errors="replace").strip().splitlines()[-1:] or ["timed out"]
                raise SandboxFailed(f"pasta could not give the sandbox its network: {reason[0]}")
            await asyncio.sleep(0.002)

    async def fork(self, worker: Worker, env: dict[str, str], init_deadline: float) -> None:
        """Ask for a worker; it is attached to ``worker`` and reports ready by itself.

        Waits for the fork server's own init first, up to ``init_deadline`` (monotonic).
        """
        try:  # raises the init failure too, if it is already known
            await asyncio.wait_for(asyncio.shield(self.ready), init_deadline - time.monotonic())
        except TimeoutError:
            self.kill()
            raise
        if self.closed:
            raise Retired
        request_id = next(self._ids)
        answer: asyncio.Future[Forked] = self._loop.create_future()
        self._forks[request_id] = answer
        self._outbox.append(json.dumps({"type": "fork", "id": request_id, "env": env}).encode())
        self._send()
        try:
            pid, host_pid, fds, pidfd = await asyncio.wait_for(
                answer, max(0.0, init_deadline - time.monotonic()))
        finally:
            self._forks.pop(request_id, None)  # a late reply is then cleaned up, not attached
            self._close_if_drained()
        self._workers[pid] = worker
        # However its exit is learnt (reported, or seen on its pidfd), it is no longer ours.
        worker.gone.add_done_callback(lambda _: self._forget(pid, worker))
        worker.attach(pidfd, host_pid, fds, init_deadline)
        if self.tree is not None:
            # Moving a process between cgroups waits for an RCU grace period (milliseconds): in a
            # thread, while the worker starts, and it is not ready until it is done.
            worker.limits = asyncio.ensure_future(asyncio.to_thread(self._limit, host_pid))
            worker.limits.add_done_callback(lambda done: self._limited(worker, done))

    def _limited(self, worker: Worker, done: asyncio.Future[Cgroup]) -> None:
        error = None if done.cancelled() else done.exception()
        if error is not None:  # gone already, or out of cgroups: it must not run unlimited
            log.warning("%s: cannot put worker %d in its cgroup (%s): stopped", self.label,
                        worker.pid, error)
            worker.kill("limits")
        elif not done.cancelled():
            worker.cgroup = done.result()
            if worker.state == "dead":  # it exited while it was moved
                worker.cgroup.remove()

    def _forget(self, pid: int, worker: Worker) -> None:
        if self._workers.get(pid) is worker:
            del self._workers[pid]
        self._close_if_drained()

    def _send(self) -> None:
        assert self._sock is not None
        while self._outbox:
            try:
                self._sock.send(self._outbox[0])
            except BlockingIOError:  # a burst larger than the socket's buffer: wait for room
                self._loop.add_writer(self._sock.fileno(), self._send)
                return
            self._outbox.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def retire(self) -> None:
        """No more forks: close once every worker it forked is gone (it reports their exits).
        Whoever still waits for it to be ready is told to go to the new one instead."""
        self.retiring = True
        if not self.ready.done():
            self.ready.set_exception(Retired())
        self._close_if_drained()

    def _close_if_drained(self) -> None:
        if self.retiring and not self._workers and not self._forks:
            self.close()

    def close(self) -> None:
        """Stop it: it exits when its socket closes (its workers each see their own EOF)."""
        if self._sock is not None and not self.closed:
            self._loop.remove_reader(self._sock.fileno())
            self._loop.remove_writer(self._sock.fileno())
            self._sock.close()
        self.closed = True

    def kill(self) -> None:
        if self.pid:
            kill_group(self.pid)
        self._stop_network()

    def _stop_network(self) -> None:
        if self.network is not None and self.network.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.network.kill()

    def _limit(self, pid: int) -> Cgroup:
        """Move a new worker into a cgroup of its own, before it is given any invocation."""
        assert self.tree is not None
        cgroup = self.tree.make(self.label, self.spec.memory_mb, self.spec.pids_max)
        try:
            cgroup.add(pid)
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def _on_output(self) -> None:
        if not read_output(self._log_fd, self.output):
            self._loop.remove_reader(self._log_fd)
            os.close(self._log_fd)
            self._log_fd = -1

    def _on_message(self) -> None:
        assert self._sock is not None
        try:
            # Close-on-exec as they arrive: a process the router starts later must not inherit
            # another function's pipes.
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 20, 5, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self.close()
            return
        # The fork server runs the function's module: what it says is checked, and a message that
        # does not fit ends it.
        try:
            message = json.loads(data)
        except ValueError:
            message = None
            for fd in fds:
                os.close(fd)
        try:
            self._handle(message if isinstance(message, dict) else {}, [] if message is None else fds)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s: the fork server sent a malformed message (%r): stopped", self.label, e)
            self.kill()
            self.close()

    def _handle(self, message: dict[str, Any], fds: list[int]) -> None:
        """Act on one message; ``fds`` are closed here on every path that does not keep them."""
        kind = message.get("type")
        ids = [message.get(key) for key in ("id", "pid", "returncode") if key in message]
        if not all(type(v) is int for v in ids) or \
                len(fds) != (4 + bool(self.spec.command) if kind == "forked" else 0):
            for fd in fds:
                os.close(fd)
            raise ValueError(f"{kind!r} with {len(fds)} descriptors")
        if kind == "forked":
            answer = self._forks.get(message["id"])
            try:
                host_pid = _pidfd_pid(fds[3])  # the fork server's pid namespace is not ours
            except OSError:
                host_pid = 0
            if answer is None or answer.done() or host_pid <= 0:  # nobody will use it (or gone)
                pidfd_kill(fds[3])
                for fd in fds:
                    os.close(fd)
                return
            answer.set_result((message["pid"], host_pid, (*fds[:3], *fds[4:]), fds[3]))
        elif kind == "fork_failed":
            answer = self._forks.get(message["id"])
            if answer is not None and not answer.done():
                answer.set_exception(ForkFailed(str(message.get("message"))))
        elif kind == "exited":
            worker = self._workers.get(message["pid"])
            if worker is not None:
                worker.exited(message["returncode"])
        elif kind == "ready" and not self.ready.done():
            self.ready.set_result(None)
        elif kind == "init_error" and not self.ready.done():
            if not isinstance(message["payload"], dict):
                raise TypeError("init_error without an error object")
            self.ready.set_exception(InitFailed(str(message["error_type"]), message["payload"]))
        else:
            raise ValueError(f"{kind!r} out of turn")

    def _gone(self, returncode: int) -> None:
        """The fork server exited: nothing more will be forked or reaped through it."""
        self.close()
        self._stop_network()
        if self.cgroup is not None:
            self.cgroup.remove()
        self.gone.set_result(returncode)
        error = ForkServerGone(returncode)
        if not self.ready.done():
            self.ready.set_exception(error)
        for answer in self._forks.values():
            if not answer.done():
                answer.set_exception(error)
        self._forks.clear()
        # Its workers were reparented and will be reaped elsewhere: end them (exited kills each
        # one's group) and say so here.
        for worker in list(self._workers.values()):
            worker.exited(-signal.SIGKILL)
        self._workers.clear()
