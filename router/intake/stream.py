"""A streamed response on its way from a worker to its caller.

A source that can answer as the chunks come (a function URL in ``RESPONSE_STREAM`` mode,
InvokeWithResponseStream) puts a ``ResponseStream`` with a reader on the invocation; the pool feeds
it the worker's chunks, and ends it when the invocation ends, whatever the outcome. The chunks wait
here while the caller is behind, up to ``HIGH_WATER`` bytes: past that the worker's connection stops
being read (its writes then block in the function) until the caller has taken them down to
``LOW_WATER``. An invocation whose caller wants the whole response (the Invoke API) gets a stream
without a reader from the pool, which only collects, within the synchronous response limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18


class ResponseStream:
    __slots__ = ("reader", "content_type", "begun", "ended", "size", "_chunks", "_buffered",
                 "_waiter", "_resume", "abandoned")

    def __init__(self, reader: bool = True) -> None:
        self.reader = reader  # False: nobody reads; the chunks are the response, collected
        self.content_type = ""
        self.begun = False  # the function answered in streaming mode
        self.ended = False
        self.size = 0  # bytes the function has streamed
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._resume: Callable[[], None] | None = None  # reads the worker's connection again
        self.abandoned = False  # the caller went away: what comes is dropped

    def begin(self, content_type: str, resume: Callable[[], None]) -> None:
        self.begun = True
        self.content_type = content_type
        self._resume = resume
        self._wake()

    def write(self, data: bytes) -> bool:
        """Take a chunk; False while the caller is too far behind for more."""
        if self.ended or not data:
            return True
        self.size += len(data)
        if self.abandoned:  # counted against the limit, kept nowhere
            return True
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()
        return not self.reader or self._buffered < HIGH_WATER

    def end(self) -> None:
        self.ended = True
        self._wake()

    def abandon(self) -> None:
        """The caller has gone: what the function still streams is dropped as it comes."""
        self.reader = False
        self.abandoned = True
        self._chunks.clear()
        self._buffered = 0
        self._caught_up()

    def collected(self) -> bytes:
        return b"".join(self._chunks)

    async def started(self) -> None:
        """Until the function begins streaming or the invocation ends."""
        while not (self.begun or self.ended):
            await self._wait()

    async def read(self) -> bytes | None:
        """The next chunk, or None once the invocation has ended and every chunk was read."""
        while not self._chunks:
            if self.ended:
                return None
            await self._wait()
        data = self._chunks.popleft()
        self._buffered -= len(data)
        if self._buffered <= LOW_WATER:
            self._caught_up()
        return data

    def _caught_up(self) -> None:
        if self._resume is not None:
            self._resume()  # a no-op unless the worker's connection was paused

    def _wait(self) -> asyncio.Future[None]:
        self._waiter = asyncio.get_running_loop().create_future()
        return self._waiter

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
