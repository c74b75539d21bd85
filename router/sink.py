"""Append-only output written in batches, not one ``write`` per record.

With ``delay=0`` (metering) the batch is written at the end of the event-loop iteration that made
it: the records of one burst of completions share a system call, yet every record is written before
the caller that it concerns sees its response, so a crash loses nothing already answered. With a
delay (function logs, which promise less) batches are larger still.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


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
