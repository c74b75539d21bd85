"""The Runtime API's HTTP/1.1 server: its parsing in tables, then the protocol on a real loopback
socket with what runtime clients send (curl's Expect, chunked bodies, keep-alive, pipelining) and
what a hostile worker might (floods, endless heads, bodies over the limit)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from workers.http1 import BadRequest, Connection, Dechunker, Request, parse_head


@pytest.mark.parametrize(("head", "expected"), [
    (b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x",
     ("GET", "/2018-06-01/runtime/invocation/next", {"host": "x"})),
    (b"POST /a?b=1 HTTP/1.0\r\nContent-Length: 5\r\nX-Y:  z ",
     ("POST", "/a", {"content-length": "5", "x-y": "z"})),
])
def test_parse_head(head: bytes, expected: tuple[str, str, dict[str, str]]) -> None:
    assert parse_head(head) == expected


@pytest.mark.parametrize("head", [b"GET /\r\n", b"GET / HTTP/2\r\n", b"GET x HTTP/1.1",
                                  b"GET / HTTP/1.1\r\nno colon", b"GET / HTTP/1.1\r\n bad: x"])
def test_parse_head_refuses(head: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(head)


@pytest.mark.parametrize(("parts", "body", "trailers", "left"), [
    ([b"5\r\nhello\r\n0\r\n\r\n"], b"hello", {}, b""),
    ([b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT"], b"hello world",
     {"trailer": "x"}, b"NEXT"),
    ([b"5\r\nhel"], b"hel", None, b""),
    ([b"5\r\nhello\r\n0\r\n"], b"hello", None, b""),
    # Split anywhere: inside a size line, the data, its CRLF, a trailer.
    ([b"1", b"0\r\n0123456789", b"abcdef\r", b"\n0\r\nX-Err", b"or: E\r\n", b"\r\n"],
     b"0123456789abcdef", {"x-error": "E"}, b""),
])
def test_dechunker(parts: list[bytes], body: bytes, trailers: dict[str, str] | None,
                   left: bytes) -> None:
    reader, data, got = Dechunker(), bytearray(), b""
    for part in parts:
        data += part
        got += b"".join(reader.feed(data))
    assert (got, reader.trailers, bytes(data)) == (body, trailers, left)


@pytest.mark.parametrize("data", [b"zz\r\n", b"f" * 2000, b"2\r\nhiXX", b"0\r\nno colon\r\n\r\n",
                                  b"0\r\n" + b"".join(b"x-%d: y\r\n" % i for i in range(3000))])
def test_dechunker_refuses(data: bytes) -> None:
    with pytest.raises(BadRequest) as e:
        Dechunker().feed(bytearray(data))
    assert e.value.args[0] == 400


async def serve(limit: int = 1000) -> tuple[asyncio.Server, int, list[Request], list[Connection]]:
    seen: list[Request] = []
    held: list[Connection] = []  # requests to "/hold" are answered by the test, later

    def handle(connection: Connection, request: Request) -> None:
        seen.append(request)
        if request.path == "/hold":
            held.append(connection)
        else:
            body = b"none" if request.body is None else request.body
            connection.respond(202, body, {"X-Path": request.path})

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(handle, limit), "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen, held


async def exchange(port: int, data: bytes, until: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = b""
    try:
        async with asyncio.timeout(5):
            while until not in answer or not until:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                answer += chunk
    finally:
        writer.close()
    return answer


async def test_keep_alive_pipelining_chunked_and_expect() -> None:
    server, port, seen, _ = await serve()
    async with server:
        answer = await exchange(port, (
            b"POST /one HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /two HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
            b"POST /three HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz"
            b"GET /four HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert [r.path for r in seen] == ["/one", "/two", "/three", "/four"]
    assert [r.body for r in seen] == [b"abc", b"hi", b"z", b""]
    assert answer.count(b"HTTP/1.1 202 Accepted") == 4
    assert b"HTTP/1.1 100 Continue\r\n\r\n" in answer
    assert answer.endswith(b"Connection: close\r\n\r\n")  # the last asked to close


async def test_a_held_request_stops_parsing_until_it_is_answered() -> None:
    server, port, seen, held = await serve()
    async with server:
        task = asyncio.ensure_future(exchange(port, b"GET /hold HTTP/1.1\r\n\r\n"
                                                    b"GET /after HTTP/1.1\r\nConnection: close\r\n\r\n"))
        for _ in range(100):
            if held:
                break
            await asyncio.sleep(0.01)
        assert [r.path for r in seen] == ["/hold"]  # the second waits for the first's answer
        held[0].respond(200, b"work")
        answer = await task
    assert [r.path for r in seen] == ["/hold", "/after"]
    assert answer.index(b"work") < answer.index(b"X-Path: /after")


async def test_a_body_over_the_limit_is_not_read_and_the_connection_closes() -> None:
    server, port, seen, _ = await serve(limit=10)
    async with server:
        answer = await exchange(port, b"POST /big HTTP/1.1\r\nExpect: 100-continue\r\n"
                                      b"Content-Length: 11\r\n\r\n")
    assert seen[0].body is None
    assert b"100 Continue" not in answer  # told not to send it
    assert answer.startswith(b"HTTP/1.1 202") and answer.endswith(b"none")


@pytest.mark.parametrize(("data", "status"), [
    (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20000, b"431"),
    (b"NONSENSE\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024, b"413"),
])
async def test_bad_requests_are_answered_and_closed(data: bytes, status: bytes) -> None:
    server, port, seen, _ = await serve()
    async with server:
        answer = await exchange(port, data)
    assert answer.startswith(b"HTTP/1.1 " + status) and b"Connection: close" in answer
    assert seen == []


async def test_a_flood_without_reading_answers_is_cut_off() -> None:
    server, port, _, held = await serve(limit=100)
    async with server:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /hold HTTP/1.1\r\n\r\n")
        sock.setblocking(False)
        sent = 0
        try:
            for _ in range(2000):
                try:
                    sent += sock.send(b"x" * 65536)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            sock.close()
    assert held and sent < 2000 * 65536  # the server closed it instead of buffering it all


class Collect:
    """A receiver of streamed bodies that answers at the end with what it got."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pieces: list[bytes] = []
        self.trailers: dict[str, str] | None = None

    def chunk(self, data: bytes) -> None:
        self.pieces.append(data)

    def end(self, trailers: dict[str, str]) -> None:
        self.trailers = trailers
        self.connection.respond(202, b"|".join(self.pieces))

    def lost(self) -> None:
        pass


async def test_a_streamed_body_reaches_its_receiver_as_it_arrives() -> None:
    receivers: list[Collect] = []
    seen: list[Request] = []

    def streamer(connection: Connection, method: str, path: str,
                 headers: dict[str, str]) -> Collect | None:
        if path != "/stream":
            return None
        receivers.append(Collect(connection))
        return receivers[-1]

    def handle(connection: Connection, request: Request) -> None:
        seen.append(request)
        connection.respond(200, request.body or b"")

    loop = asyncio.get_running_loop()
    # The limit binds bodies read whole, not streamed ones (their receiver bounds them).
    server = await loop.create_server(lambda: Connection(handle, 4, streamer), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nfirst!\r\n")
        for _ in range(100):
            if receivers and receivers[0].pieces:
                break
            await asyncio.sleep(0.01)
        assert receivers[0].pieces == [b"first!"] and receivers[0].trailers is None
        writer.write(b"7\r\nsecond!\r\n0\r\nX-Why: done\r\n\r\n"
                     b"POST /whole HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
        answer = b""
        async with asyncio.timeout(5):
            while answer.count(b"HTTP/1.1") < 2 or not answer.endswith(b"ok"):
                answer += await reader.read(65536)
        writer.close()
    assert receivers[0].trailers == {"x-why": "done"} and b"first!|second!" in answer
    assert [r.path for r in seen] == ["/whole"] and seen[0].body == b"ok"
