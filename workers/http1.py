"""The HTTP/1.1 server side of the Runtime API: one small protocol, because an invocation through
the Runtime API is two exchanges (``/next``, then the answer) and aiohttp's request machinery cost
the router 180–240 µs per invocation on top of the invoke itself, which made a Runtime API worker a
third as fast as a built-in one.

What it speaks is what runtime clients send: a request line, headers, a body by ``Content-Length``
or chunked, ``Expect: 100-continue`` (curl's for larger bodies), keep-alive. One request is handled
at a time per connection: the next is not parsed until the handler has answered (``respond``),
which a long-polled ``/next`` may do much later. Every buffer is bounded: the head by ``HEAD_MAX``,
the body by the connection's ``body_limit`` — a body over it reaches the handler as ``None``, is
not read, and the connection closes after the answer — except a streamed body (a response in
Lambda's ``streaming`` mode), which goes to its receiver piece by piece as it arrives, with reading
paused while the receiver's caller is behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple, Protocol, cast

HEAD_MAX = 16 * 1024
REASONS = {100: "Continue", 200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented"}


class BadRequest(Exception):
    """Not a request this server can read; the arg is the status to answer before closing."""


class Request(NamedTuple):
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes | None  # None: longer than the connection's limit (and not read)


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    """Method, path and headers of a request head (without its final blank line)."""
    line, *fields = head.decode("latin-1").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1].startswith("/"):
        raise BadRequest(400)
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400)
        headers[name.lower()] = value.strip()
    return parts[0], parts[1].partition("?")[0], headers


class Dechunker:
    """A chunked body, decoded as it arrives: ``feed`` takes what it can from the front of the
    connection's buffer and returns the body's bytes found there; ``trailers`` is set (to the
    trailer fields, names in lower case) once the last chunk and its trailers are in."""

    __slots__ = ("_left", "_fields", "_trailer_bytes", "trailers")

    SIZE, DATA_END, TRAILERS = -1, -2, -3  # what ``_left`` is when no chunk data is expected

    def __init__(self) -> None:
        self._left = self.SIZE  # > 0: bytes of the current chunk still to come
        self._fields: dict[str, str] = {}
        self._trailer_bytes = 0
        self.trailers: dict[str, str] | None = None

    def feed(self, data: bytearray) -> list[bytes]:
        pieces: list[bytes] = []
        while self.trailers is None:
            if self._left > 0:
                take = min(self._left, len(data))
                if not take:
                    break
                pieces.append(bytes(data[:take]))
                del data[:take]
                self._left -= take
                if not self._left:
                    self._left = self.DATA_END
            elif self._left == self.DATA_END:
                if len(data) < 2:
                    break
                if data[:2] != b"\r\n":
                    raise BadRequest(400)
                del data[:2]
                self._left = self.SIZE
            else:
                end = data.find(b"\r\n")
                if end < 0:
                    if len(data) > (1024 if self._left == self.SIZE else HEAD_MAX):
                        raise BadRequest(400)  # a size line (or a trailer) that long is not one
                    break
                line = bytes(data[:end])
                del data[:end + 2]
                if self._left == self.SIZE:
                    self._left = self._size(line)
                elif line:
                    name, colon, value = line.decode("latin-1").partition(":")
                    if not colon or not name:
                        raise BadRequest(400)
                    self._fields[name.strip().lower()] = value.strip()
                    self._trailer_bytes += len(line)
                    if self._trailer_bytes > HEAD_MAX:  # trailers are bounded as a head is
                        raise BadRequest(400)
                else:
                    self.trailers = self._fields
        return pieces

    def _size(self, line: bytes) -> int:
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            raise BadRequest(400) from None
        if size < 0:
            raise BadRequest(400)
        return size or self.TRAILERS


class Receiver(Protocol):
    """Where a streamed request body goes, piece by piece, as it arrives."""

    def chunk(self, data: bytes) -> None: ...
    def end(self, trailers: dict[str, str]) -> None: ...  # the body is whole: now answer it
    def lost(self) -> None: ...  # the connection closed before the body's end


# Asked, for each chunked request, whether its body is to be streamed: a Receiver, or None to
# have it read whole (within the connection's limit) and handed over as usual.
Streamer = Callable[["Connection", str, str, dict[str, str]], "Receiver | None"]


class Connection(asyncio.Protocol):
    """One client connection; ``handle(connection, request)`` is called for each request and
    answers it with ``respond``. With a ``streamer``, a chunked body it wants goes to its receiver
    as it arrives (not bounded by ``body_limit``: the receiver bounds it) and the request is
    answered once the receiver has its end."""

    def __init__(self, handle: Callable[[Connection, Request], None], body_limit: int,
                 streamer: Streamer | None = None) -> None:
        self.handle = handle
        self.body_limit = body_limit
        self.streamer = streamer
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._chunks: Dechunker | None = None  # the chunked body being read
        self._body = bytearray()  # what of it has arrived, unless it is streamed
        self._receiver: Receiver | None = None  # where the body being read goes, if streamed
        self._waiting = False  # a request handed over and not answered yet
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return  # answered and closed: what the client still sends is not read
        self._buffer += data
        try:
            self._parse()
        except BadRequest as e:
            self._fail(e.args[0])
            return
        if len(self._buffer) > HEAD_MAX + self.body_limit + 64 * 1024:
            self._fail(413)  # more than a request can hold, sent while one waits: a flood

    def _parse(self) -> None:
        while not self._waiting and self.transport is not None:
            if self._head is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > HEAD_MAX:
                        raise BadRequest(431)
                    return
                self._head = parse_head(bytes(self._buffer[:end]))
                del self._buffer[:end + 4]
                method, path, headers = self._head
                chunked = "chunked" in headers.get("transfer-encoding", "").lower()
                if chunked:
                    self._chunks = Dechunker()
                    if self.streamer is not None:
                        self._receiver = self.streamer(self, method, path, headers)
                if headers.get("expect", "").lower() == "100-continue" and \
                        (self._receiver is not None or self._length(headers) <= self.body_limit):
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            method, path, headers = self._head
            trailers = None
            if self._chunks is not None:
                if not self._read_chunks():
                    return
                body: bytes | None = bytes(self._body)
                trailers, self._chunks, self._body = self._chunks.trailers, None, bytearray()
            else:
                length = self._length(headers)
                if length > self.body_limit:  # not read: answered, then the connection closes
                    body, self._close_after = None, True
                elif len(self._buffer) < length:
                    return
                else:
                    body = bytes(self._buffer[:length])
                    del self._buffer[:length]
            self._head = None
            self._waiting = True
            if headers.get("connection", "").lower() == "close":
                self._close_after = True
            receiver, self._receiver = self._receiver, None
            if receiver is not None:
                receiver.end(trailers or {})
            else:
                self.handle(self, Request(method, path, headers, body))

    def _read_chunks(self) -> bool:
        """Take what has come of a chunked body; whether it is all in."""
        assert self._chunks is not None
        for piece in self._chunks.feed(self._buffer):
            if self._receiver is not None:
                self._receiver.chunk(piece)
                if self.transport is None:  # the receiver answered (refused) and closed
                    self._receiver = None
                    return False
            elif len(self._body) + len(piece) > self.body_limit:
                raise BadRequest(413)
            else:
                self._body += piece
        return self._chunks.trailers is not None

    def pause(self) -> None:
        """Stop reading (a streamed body's receiver is behind)."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    @staticmethod
    def _length(headers: dict[str, str]) -> int:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest(400) from None
        if length < 0:
            raise BadRequest(400)
        return length

    def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                content_type: str = "application/json", close: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._close_after |= close
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        closing = "Connection: close\r\n" if self._close_after else ""
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}{closing}\r\n".encode() + body)
        self._waiting = False
        if self._close_after:
            self.transport.close()
            self.transport = None
        elif self._buffer:
            try:
                self._parse()
            except BadRequest as e:
                self._fail(e.args[0])

    def _fail(self, status: int) -> None:
        self._close_after = True
        self._waiting = False
        self.respond(status, b'{"errorMessage": "bad request", "errorType": "InvalidRequest"}')

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.lost()

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()
