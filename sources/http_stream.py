"""A function URL in ``RESPONSE_STREAM`` mode: the function's streamed response goes to the caller
as a chunked HTTP response, each chunk as it comes.

A stream of type ``application/vnd.awslambda.http-integration-response`` (what Node.js's
``awslambda.HttpResponseStream.from`` writes) begins with a metadata prelude: a JSON object with
``statusCode``, ``headers`` and ``cookies``, then 8 NUL bytes, then the body. Any other stream is
the body, sent with status 200 and the stream's content type. A function that answers whole is
answered as a buffered URL would be (``http_trigger``). Once the status has gone, a failure can only
cut the response short: its connection closes without the chunked body's end, so the caller sees
it incomplete.
"""

from __future__ import annotations

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from router.intake.invocation import Invocation
from router.intake.stream import ResponseStream
from sources.apigw import response_head

PRELUDE_TYPE = "application/vnd.awslambda.http-integration-response"
DELIMITER = b"\0" * 8
MAX_PRELUDE = 16 * 1024  # API Gateway wants the prelude within a stream's first 16 KB


class BadPrelude(Exception):
    """The stream's metadata prelude is not one (the arg says why)."""


class Prelude(msgspec.Struct, forbid_unknown_fields=False):
    statusCode: int = 200
    headers: dict[str, str] = {}
    cookies: list[str] = []


_decode_prelude = msgspec.json.Decoder(Prelude).decode


def parse_prelude(data: bytes) -> Prelude:
    try:
        prelude = _decode_prelude(data) if data.strip() else Prelude()
    except msgspec.DecodeError as e:
        raise BadPrelude(str(e)) from None
    try:
        status, headers = response_head(prelude.statusCode, prelude.headers, prelude.cookies)
    except (TypeError, ValueError) as e:  # as a buffered response's would be
        raise BadPrelude(f"{e} cannot be sent: {str(prelude)[:200]}") from None
    return Prelude(status, {name: value for name, value in headers if name != "Set-Cookie"},
                   prelude.cookies)


class PreludeReader:
    """Finds the prelude at the start of a stream fed to it chunk by chunk."""

    __slots__ = ("_head", "prelude")

    def __init__(self) -> None:
        self._head = bytearray()
        self.prelude: Prelude | None = None

    def feed(self, data: bytes) -> bytes | None:
        """The body bytes in ``data`` once the prelude is complete (its first ones may be
        empty), None while it is not."""
        start = max(0, len(self._head) - len(DELIMITER) + 1)
        self._head += data
        at = self._head.find(DELIMITER, start)
        if at < 0:
            if len(self._head) > MAX_PRELUDE:
                raise BadPrelude(f"no end of the metadata prelude in the first {MAX_PRELUDE} bytes")
            return None
        self.prelude = parse_prelude(bytes(self._head[:at]))
        body = bytes(self._head[at + len(DELIMITER):])
        self._head = bytearray()
        return body

    def finish(self) -> Prelude:
        """The stream ended before the delimiter: all of it was the prelude."""
        self.prelude = parse_prelude(bytes(self._head))
        return self.prelude


def prelude_headers(prelude: Prelude) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict(prelude.headers)
    for cookie in prelude.cookies:
        headers.add("Set-Cookie", cookie)
    return headers


async def head_of(stream: ResponseStream) -> tuple[int, CIMultiDict[str], bytes]:
    """The status, headers and first body bytes of a stream that has begun."""
    if stream.content_type != PRELUDE_TYPE:
        first = await stream.read()
        return 200, CIMultiDict({"Content-Type": stream.content_type}), first or b""
    reader = PreludeReader()
    while True:
        chunk = await stream.read()
        if chunk is None:
            prelude, body = reader.finish(), b""
            break
        if (body := reader.feed(chunk)) is not None:
            prelude = reader.prelude
            assert prelude is not None
            break
    return prelude.statusCode, prelude_headers(prelude), body


async def streamed(request: web.BaseRequest, inv: Invocation,
                   extra: dict[str, str] | None) -> web.StreamResponse | None:
    """The streamed answer, or None if the function did not stream (it answered whole or failed
    first): the caller then answers as for a buffered URL. ``BadPrelude`` if its prelude is bad."""
    stream = inv.stream
    assert stream is not None
    try:
        await stream.started()
        if not stream.begun:
            return None
        status, headers, body = await head_of(stream)
        headers["apigw-requestid"] = inv.request_id
        headers.update(extra or {})
        response = web.StreamResponse(status=status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if body:
                await response.write(body)
            while (chunk := await stream.read()) is not None:
                await response.write(chunk)
            if inv.future.result().status == "success":
                await response.write_eof()
            elif request.transport is not None:
                request.transport.close()  # after what was sent, without the body's end: cut short
        except ConnectionResetError:
            pass  # the caller went away; the function runs on (and is billed) as on Lambda
        return response
    finally:
        stream.abandon()
