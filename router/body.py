"""Reading a request's body: within a size limit and a time limit, and for the Lambda API
(Invoke and management alike) with its credentials checked and its refusals in AWS's shapes."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from router.awserror import aws_error
from router.registry import Registry


class UnreadableBody(Exception):
    """The body could not be read as sent (a broken Content-Encoding, a truncated chunk)."""


async def read_body(request: web.BaseRequest, limit: int, within_s: float) -> bytes | None:
    """The request body, or None once it is known to exceed ``limit``: from Content-Length before
    reading anything, or, for a chunked body, as soon as the bytes read pass it. A body still
    arriving after ``within_s`` seconds raises TimeoutError (a slow client holds nothing for long);
    one already here, the usual case, is taken without a timer."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    try:
        if request.content.is_eof():  # all here already: one copy out of the buffer
            body = request.content.read_nowait()
            return None if len(body) > limit else body
        async with asyncio.timeout(within_s):
            buffer = bytearray()
            while chunk := await request.content.read(1 << 16):
                buffer += chunk
                if len(buffer) > limit:
                    return None
            return bytes(buffer)
    except RequestPayloadError as e:
        raise UnreadableBody(str(e)) from None


async def api_body(request: web.BaseRequest, registry: Registry, limit: int, too_large: str,
                   unreadable: str) -> bytes | web.Response:
    """A Lambda API request's body once its credentials pass, or the response refusing it:
    ``too_large`` is the 413's message, ``unreadable`` the error code of a broken body's 400.
    Credentials come after the body because a SigV4 signature covers it."""
    try:
        body = await read_body(request, limit, registry.config.server.body_timeout_s)
    except TimeoutError:
        return aws_error(408, "RequestTimeoutException", "The request body was not received in time")
    except UnreadableBody as e:
        return aws_error(400, unreadable, f"The request body is unreadable: {e}")
    if body is None:
        return aws_error(413, "RequestTooLargeException", too_large)
    refused = registry.api_refusal(request, body)
    return body if refused is None else refused
