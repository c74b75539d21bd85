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
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections import deque

from workers.process import Worker, WorkerSpec, kill_group, python_argv


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


class ForkServer:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.gone: asyncio.Future[int] = self._loop.create_future()  # its exit status
        self.pid = 0
        self._sock: socket.socket | None = None
        # Fork requests by id: a reply is matched to its request, never to its position.
        self._forks: dict[int, asyncio.Future[tuple[int, tuple[int, int, int]]]] = {}
        self._ids = itertools.count()
        self._outbox: deque[bytes] = deque()  # requests the socket had no room for yet
        self._workers: dict[int, Worker] = {}
        self.closed = False
        self.retiring = False
        # Nobody may be waiting when it fails; the failure is still handled, not "never retrieved".
        self.ready.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def start(self, spec: WorkerSpec) -> None:
        """Start the process; a failure to start is its init failure, seen by every waiter."""
        try:
            await self._start(spec)
        except OSError as e:
            self.closed = True
            if not self.ready.done():
                self.ready.set_exception(e)

    async def _start(self, spec: WorkerSpec) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await asyncio.create_subprocess_exec(
                *python_argv(spec.python), "forkserver", str(theirs.fileno()),
                # What the module prints at import goes to the daemon's log as it is.
                stdin=subprocess.DEVNULL, stdout=2, stderr=2,
                env=spec.env, cwd=spec.cwd, pass_fds=(theirs.fileno(),), start_new_session=True)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self.pid = proc.pid
        if self.closed:  # retired while it was starting: it will never be asked for anything
            mine.close()
            self.kill()
            return
        mine.setblocking(False)
        self._sock = mine
        self._loop.add_reader(mine.fileno(), self._on_message)
        reaper = asyncio.ensure_future(proc.wait())
        reaper.add_done_callback(lambda t: t.cancelled() or self._gone(t.result()))

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
        answer: asyncio.Future[tuple[int, tuple[int, int, int]]] = self._loop.create_future()
        self._forks[request_id] = answer
        self._outbox.append(json.dumps({"type": "fork", "id": request_id, "env": env}).encode())
        self._send()
        try:
            pid, fds = await asyncio.wait_for(answer, max(0.0, init_deadline - time.monotonic()))
        finally:
            self._forks.pop(request_id, None)  # a late reply is then cleaned up, not attached
            self._close_if_drained()
        self._workers[pid] = worker
        worker.attach(pid, fds, init_deadline)

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

    def _on_message(self) -> None:
        assert self._sock is not None
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, 1 << 20, 3)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self.close()
            return
        message = json.loads(data)
        kind = message["type"]
        if kind == "forked":
            answer = self._forks.get(message["id"])
            if answer is None or answer.done():  # its waiter gave up: nobody will use it
                for fd in fds:
                    os.close(fd)
                kill_group(message["pid"])
            else:
                answer.set_result((message["pid"], (fds[0], fds[1], fds[2])))
        elif kind == "fork_failed":
            answer = self._forks.get(message["id"])
            if answer is not None and not answer.done():
                answer.set_exception(ForkFailed(message["message"]))
        elif kind == "exited":
            worker = self._workers.pop(message["pid"], None)
            if worker is not None:
                worker.exited(message["returncode"])
            self._close_if_drained()
        elif kind == "ready":
            self.ready.set_result(None)
        elif kind == "init_error":
            self.ready.set_exception(InitFailed(message["error_type"], message["payload"]))

    def _gone(self, returncode: int) -> None:
        """The fork server exited: nothing more will be forked or reaped through it."""
        self.close()
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
        for worker in self._workers.values():
            worker.exited(-signal.SIGKILL)
        self._workers.clear()
