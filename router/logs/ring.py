"""Each function's recent log, kept in memory for ``headwater logs``: bounded in bytes, oldest
dropped first, and waited on by followers (``--follow``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

ENTRY_BYTES = 96  # what an entry costs beside its text (tuple, floats, the request id's string)


class Entry(NamedTuple):
    seq: int  # increasing per function: a follower's position
    time: float  # epoch seconds
    request_id: str  # format.BETWEEN for output between invocations
    level: str  # "INFO", or "ERROR" for the errors Headwater reports
    logger: str  # "function" (its output) or "platform" (START, END, REPORT, errors)
    text: bytes  # whole lines, each ending in a newline


class LogRing:
    """Entries are kept as plain tuples (an ``Entry`` costs a Python-level call to make, on every
    invocation) and read as ``Entry``."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.entries: deque[tuple[int, float, str, str, str, bytes]] = deque()
        self.size = 0
        self.seq = 0
        self.waiters: list[asyncio.Future[None]] = []

    def add(self, time: float, request_id: str, level: str, logger: str, text: bytes) -> None:
        if len(text) + ENTRY_BYTES > self.limit:  # one entry bigger than the ring: its end
            cut = text.find(b"\n", len(text) - self.limit + ENTRY_BYTES)
            text = text[cut + 1:] if cut >= 0 else b""
            if not text:
                return
        self.seq += 1
        self.entries.append((self.seq, time, request_id, level, logger, text))
        self.size += len(text) + ENTRY_BYTES
        while self.size > self.limit:
            self.size -= len(self.entries.popleft()[5]) + ENTRY_BYTES
        if self.waiters:
            self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def after(self, seq: int, since: float) -> Iterator[Entry]:
        """The entries after position ``seq`` that are no older than ``since``, oldest first."""
        if not self.entries:
            return
        # Positions are consecutive, so the first one wanted is found by subtraction; a deque is
        # walked, not indexed (each index walks it again).
        for kept in itertools.islice(self.entries, max(0, seq - self.entries[0][0] + 1), None):
            entry = Entry._make(kept)
            if entry.time >= since:
                yield entry

    async def wait(self, seconds: float) -> None:
        """Until an entry is added, the ring is closed, or ``seconds`` pass."""
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await waiter
        finally:
            if waiter in self.waiters:  # timed out: not left for the next line to find
                self.waiters.remove(waiter)


class LogRings:
    """The rings of every function, by name; none are kept when ``limit_bytes`` is 0."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.rings: dict[str, LogRing] = {}

    def get(self, function: str) -> LogRing:
        ring = self.rings.get(function)
        if ring is None:
            ring = self.rings[function] = LogRing(self.limit)
        return ring

    def drop(self, function: str) -> None:
        ring = self.rings.pop(function, None)
        if ring is not None:
            ring.wake()

    def close(self) -> None:
        """Followers return what they have: the daemon is stopping."""
        for ring in self.rings.values():
            ring.wake()
