"""The HTTP/1.1 server side of the Runtime API: one small protocol, because an invocation through
the Runtime API is two exchanges (``/next``, then the answer) and aiohttp's request machinery cost
the router 180–240 µs per invocation on top of the invoke itself, which made a Runtime API worker a
third as fast as a built-in one.

What it speaks is what runtime clients send: a request line, headers, a body by ``Content-Length``
or chunked, ``Expect: 100-continue`` (curl's for larger bodies), keep-alive. One request is handled
at a time per connection: the next is not parsed until the handler has answered (``respond``),
which a long-polled ``/next`` may do much later. Every buffer is bounded: the head by ``HEAD_MAX``,
the body by the connection's ``body_limit`` — a body over it reaches the handler as ``None``, is
not read, and the connection closes after the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple, cast

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


def dechunk(data: bytearray, limit: int) -> tuple[bytes | None, int] | None:
    """A chunked body at the start of ``data``: ``(body, bytes used)``, with body None once past
    ``limit``; None while incomplete."""
    body = bytearray()
    at = 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            if len(data) - at > 1024:  # a size line that long is not one
                raise BadRequest(400)
            return None
        try:
            size = int(bytes(data[at:end]).split(b";")[0], 16)
        except ValueError:
            raise BadRequest(400) from None
        at = end + 2
        if size == 0:
            while True:  # trailers, if any, up to the blank line
                end = data.find(b"\r\n", at)
                if end < 0:
                    return None
                if end == at:
                    return (bytes(body) if len(body) <= limit else None), end + 2
                at = end + 2
        if len(data) < at + size + 2:
            return None
        if len(body) + size > limit:
            raise BadRequest(413)
        body += data[at:at + size]
        at += size + 2


class Connection(asyncio.Protocol):
    """One client connection; ``handle(connection, request)`` is called for each request and
    answers it with ``respond``."""

    def __init__(self, handle: Callable[[Connection, Request], None], body_limit: int) -> None:
        self.handle = handle
        self.body_limit = body_limit
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: tuple[str, str, dict[str, str]] | None = None
        self._waiting = False  # a request handed over and not answered yet
        self._close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def data_received(self, data: bytes) -> None:
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
                headers = self._head[2]
                if headers.get("expect", "").lower() == "100-continue" and \
                        self._length(headers) <= self.body_limit:
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            method, path, headers = self._head
            if "chunked" in headers.get("transfer-encoding", "").lower():
                found = dechunk(self._buffer, self.body_limit)
                if found is None:
                    return
                body, used = found
            else:
                length = self._length(headers)
                if length > self.body_limit:  # not read: answered, then the connection closes
                    body, used, self._close_after = None, 0, True
                elif len(self._buffer) < length:
                    return
                else:
                    body, used = bytes(self._buffer[:length]), length
            del self._buffer[:used]
            self._head = None
            self._waiting = True
            if headers.get("connection", "").lower() == "close":
                self._close_after = True
            self.handle(self, Request(method, path, headers, body))

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
                content_type: str = "application/json") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        close = "Connection: close\r\n" if self._close_after else ""
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}{close}\r\n".encode() + body)
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

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()
