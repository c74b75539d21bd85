"""Append-only output written in batches, not one ``write`` per record.

With ``delay=0`` (metering) the batch is written at the end of the event-loop iteration that made
it: the records of one burst of completions share a system call, yet every record is written before
the caller that it concerns sees its response, so a crash loses nothing already answered. With a
delay (function logs, which promise less) batches are larger still.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

LOG_BUFFER_BYTES = 1 << 20  # function log bytes held before a flush, whatever the delay
LOG_BACKLOG_BYTES = 4 << 20  # function log bytes held while the daemon's stderr is full
log = logging.getLogger("headwater.metering")

RETRY_S = 0.5  # while the metering file cannot be written, how often it is tried again


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


def utc_day(epoch: float) -> int:
    """Days since 1970-01-01 in UTC: the day a record written at ``epoch`` belongs to."""
    return int(epoch // 86400)


class RotatingFile(BatchWriter):
    """A ``BatchWriter`` on an append-only file, rotated to ``PATH.1`` … ``PATH.N`` by size (and,
    with ``daily``, at the first batch of each UTC day), that fails closed.

    Rotation happens between batches, by renames only, so each record is in exactly one file
    whatever the moment of a crash. The day of a file already there is the day it was last
    written (its mtime): a daemon started the next morning rotates yesterday's file first.

    A batch is written whole or not at all: if a write fails (no space, no permission, the folder
    removed, the file deleted under the open descriptor), what was written of it is truncated away,
    the descriptor closed, and the batch kept in memory with every later record, up to
    ``buffer_bytes``; ``failing`` says why meanwhile. Every ``RETRY_S`` the file is reopened and
    the records written. The descriptor is forgotten as it is closed (``-1``), so a number the
    kernel has since given to another file, a client's socket say, is never closed by mistake.
    """

    def __init__(self, path: str | Path, rotate_bytes: int, backups: int,
                 buffer_bytes: int = 64 * 1024 * 1024, daily: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self.backups = backups
        self.buffer_bytes = buffer_bytes
        self.daily = daily
        super().__init__(self._open())
        self._opened()
        self.failing: OSError | None = None
        self.buffered = 0  # bytes written to this object and not yet to the file
        self.dropped = 0  # records refused for want of buffer while failing
        self._retry: asyncio.TimerHandle | None = None

    def _open(self) -> int:
        # No mkdir here: a folder removed under a running daemon stays removed until restored,
        # and the daemon stays unready meanwhile rather than writing records where none look.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        if self.failing is not None and self.buffered + len(data) > self.buffer_bytes:
            if not self.dropped:
                log.error("metering: buffer of %d bytes full; records are being dropped until "
                          "%s can be written", self.buffer_bytes, self.path)
            self.dropped += 1
            return
        self.buffered += len(data)
        super().write(data)

    def flush(self) -> None:
        self._scheduled = False
        # While failing, only the retry timer touches the file: not a failed open per iteration.
        if self._parts and self.failing is None:
            self._attempt()

    def check(self) -> None:
        """Fail now if the file was deleted (its folder removed, say), rather than at the next
        record: readiness should not wait for traffic to notice."""
        if self.failing is None and self.fd >= 0:
            try:
                deleted = os.fstat(self.fd).st_nlink == 0
            except OSError as e:
                self._fail(e)
                return
            if deleted:
                self._fail(FileNotFoundError(errno.ENOENT, "the file was deleted", str(self.path)))

    def _attempt(self) -> bool:
        data = b"".join(self._parts)
        try:
            if self.fd < 0:
                self.fd = self._open()
                self._opened()
            if data:
                self._write_batch(data)
        except OSError as e:
            self._fail(e, data)
            return False
        self._parts.clear()
        self.buffered = 0
        return True

    def _opened(self) -> None:
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.day = utc_day(st.st_mtime)

    def _write_batch(self, data: bytes) -> None:
        today = utc_day(time.time())
        if self.size and (self.size + len(data) > self.rotate_bytes
                          or (self.daily and today != self.day)):
            self.rotate()
        if not self.size:  # an empty file belongs to the day of its first record
            self.day = today
        before = self.size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            if os.fstat(self.fd).st_nlink == 0:  # written, but into a file no one can read
                raise FileNotFoundError(errno.ENOENT, "the file was deleted", str(self.path))
        except OSError:
            try:
                os.ftruncate(self.fd, before)  # no half batch for the retry to write again
            except OSError:
                pass
            raise
        self.size += len(data)

    def _fail(self, error: OSError, data: bytes | None = None) -> None:
        self._close_fd()
        if data is not None:
            self._parts[:] = [data]
        if self.failing is None:
            log.error("metering: cannot write %s (%s); new invocations are refused until it "
                      "can be", self.path, error.strerror or error)
        self.failing = error
        if self._retry is None:
            self._retry = self._loop.call_later(RETRY_S, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if not self._attempt():
            return
        log.warning("metering: %s is writable again%s", self.path,
                    f"; {self.dropped} records were dropped meanwhile" if self.dropped else "")
        self.failing = None
        self.dropped = 0

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def rotate(self) -> None:
        self._close_fd()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self.fd = self._open()
        self._opened()

    def close(self) -> None:
        """Write what is pending (one last attempt if failing); what still cannot be written goes
        to stderr, where journald keeps it, rather than nowhere."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self._scheduled = False
        if self._parts and not self._attempt():
            data = b"".join(self._parts)
            log.error("metering: %d bytes of records could not be written to %s (%s); they "
                      "follow on stderr", len(data), self.path, self.failing)
            view = memoryview(data)
            while view:
                view = view[os.write(2, view):]
            self._parts.clear()
        self._close_fd()


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

    def end_line(self) -> None:
        """Finish the line a short write left half written, waiting for room: called before the
        daemon writes a record of its own (which waits for room anyway), so that the record
        never lands inside a function's line, and a JSON line stays one object."""
        end = self._backlog.find(b"\n") + 1
        if not end:
            return
        view = memoryview(self._backlog)[:end]
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [])
            except OSError:
                break  # the reader is gone: nothing to keep whole
        view.release()
        del self._backlog[:end]
        if not self._backlog:
            self._loop.remove_writer(self._out)

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
