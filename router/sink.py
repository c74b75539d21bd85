"""Append-only output written in batches, not one ``write`` per record.

With ``delay=0`` (metering) the batch is written at the end of the event-loop iteration that made
it: the records of one burst of completions share a system call, yet every record is written before
the caller that it concerns sees its response, so a crash loses nothing already answered. With a
delay (function logs, which promise less) batches are larger still.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

LOG_BUFFER_BYTES = 1 << 20  # function log bytes held before a flush, whatever the delay
LOG_BACKLOG_BYTES = 4 << 20  # function log bytes held while the daemon's stderr is full


class BatchWriter:
    """Buffers bytes and writes them to a file descriptor once per loop iteration."""

    def __init__(self, fd: int, delay: float = 0.0) -> None:
        self.fd = fd
        self.delay = delay
        self._parts: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        if not self._scheduled:
            self._scheduled = True
            if self.delay:
                self._loop.call_later(self.delay, self.flush)
            else:
                self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        self._write_all(data)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                # A non-blocking stderr (a pipe set so by a parent): wait for room rather than
                # drop the output; this is the rare slow path.
                os.set_blocking(self.fd, True)


class RotatingFile(BatchWriter):
    """A ``BatchWriter`` on an append-only file, rotated to ``PATH.1`` … ``PATH.N`` by size."""

    def __init__(self, path: str | Path, rotate_bytes: int, backups: int) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.backups = backups
        super().__init__(self._open())
        self.size = os.fstat(self.fd).st_size

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _write_all(self, data: bytes) -> None:
        if self.size and self.size + len(data) > self.rotate_bytes:
            self.rotate()
        super()._write_all(data)
        self.size += len(data)

    def rotate(self) -> None:
        os.close(self.fd)
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.fd = self._open()
        self.size = 0

    def close(self) -> None:
        self.flush()
        os.close(self.fd)


def nonblocking_writer(fd: int) -> tuple[int, Callable[[bytes | bytearray], int]]:
    """A descriptor for ``fd``'s file, to wait on with ``add_writer``, and a ``write`` on it that
    raises ``BlockingIOError`` rather than wait.

    ``fd`` itself is left as it is: its flags are shared with every process that holds the same
    open file (the terminal's shell, the fork servers, the daemon's own ``logging``), so a pipe or
    terminal is opened anew through ``/proc/self/fd`` and a socket (journald's) is sent to with
    ``MSG_DONTWAIT``. A regular file never makes a writer wait on a reader, so it is used as it is.
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))
        return sock.fileno(), lambda data: sock.send(data, socket.MSG_DONTWAIT)
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        try:
            fd = os.open(f"/proc/self/fd/{fd}",
                         os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            pass  # no /proc: writes may wait, as they did before
    return fd, lambda data: os.write(fd, data)


class LogWriter(BatchWriter):
    """A ``BatchWriter`` for function logs on the daemon's stderr, which never waits for it.

    What the stderr has no room for waits in a backlog, written as room comes (``add_writer``);
    when the reader (journald, a pipe) falls so far behind that the backlog would pass
    ``LOG_BACKLOG_BYTES``, new batches are dropped whole and their lines counted in ``dropped``.
    """

    def __init__(self, fd: int, delay: float) -> None:
        super().__init__(fd, delay)
        self._out, self._send = nonblocking_writer(fd)
        self._buffered = 0
        self._backlog = bytearray()
        self.dropped = 0  # lines

    def write_output(self, data: bytes) -> None:
        """``write`` for what a function printed: past ``LOG_BUFFER_BYTES`` it is flushed at once
        rather than held for the whole delay. (Lambda's own lines, a few per invocation, take
        plain ``write``: this bookkeeping stays off the path of a function that prints nothing.)"""
        self.write(data)
        self._buffered += len(data)
        if self._buffered > LOG_BUFFER_BYTES:
            self.flush()

    def _write_all(self, data: bytes) -> None:
        self._buffered = 0
        if self._backlog:  # behind already: after the backlog, in order, or not at all
            if len(self._backlog) + len(data) > LOG_BACKLOG_BYTES:
                self.dropped += data.count(b"\n")
            else:
                self._backlog += data
            return
        written = self._try(data)
        if written < len(data):
            self._backlog += memoryview(data)[written:]
            self._loop.add_writer(self._out, self._drain)

    def _drain(self) -> None:
        del self._backlog[:self._try(self._backlog)]
        if not self._backlog:
            self._loop.remove_writer(self._out)

    def _try(self, data: bytes | bytearray) -> int:
        try:
            return self._send(data)
        except BlockingIOError:
            return 0
        except OSError:  # the reader is gone (EPIPE): nothing will ever take these lines
            self.dropped += data.count(b"\n")
            return len(data)
