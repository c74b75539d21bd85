"""A request's credentials, then its body: every surface that takes a body (the Lambda API, routes,
function URLs) goes through ``take_body``.

Credentials come first. A request without valid ones is refused from its headers alone: no
``100 Continue`` is sent and nothing of its body is read, so an anonymous 60 MB upload costs the
daemon a few kilobytes of socket buffer. Only a SigV4 signature waits for the body, because it covers
the body's hash; even then its access key and time are checked first, and the hash of a large body is
computed off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from router.api import auth
from router.api.awserror import aws_error
from router.config import AuthMode, ServerConfig

HASH_IN_THREAD = 1024 * 1024  # bytes; hashing a smaller body costs less than a thread hop


class Refusal(Exception):
    """Why a request is not served: its status, an AWS error code and a message. Each surface
    answers it in its own shape (AWS's for the API, API Gateway's for routes and URLs)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> web.Response:
        """The refusal in AWS's shape, for the Lambda API."""
        return aws_error(self.status, self.code, self.message)


def check_credentials(request: web.BaseRequest, server: ServerConfig, mode: AuthMode,
                      now: float) -> auth.SigV4 | None:
    """Raise a 403 ``Refusal`` unless the request's headers carry what ``mode`` asks for. A SigV4
    signature is returned for ``check_signature`` once the body's hash is known."""
    if mode == "none":
        return None
    header = request.headers.get("Authorization", "")
    if not header:
        raise Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    if mode != "aws_iam" and header[:7].lower() == "bearer ":
        if auth.bearer_ok(header, server.tokens):
            return None
        raise Refusal(403, "UnrecognizedClientException",
                      "The security token included in the request is invalid.")
    if mode == "token":
        raise Refusal(403, "UnrecognizedClientException", "A bearer token is required")
    try:
        signature = auth.parse_sigv4(request.headers, server.access_keys, now)
        claimed = auth.claimed_hash(request.headers)
        if claimed is not None:  # the whole signature can be checked before the body
            check_signature(request, signature, claimed)
    except auth.Refused as e:
        raise Refusal(403, e.code, e.message) from None
    return signature


def check_signature(request: web.BaseRequest, signature: auth.SigV4, payload_hash: str) -> None:
    path, _, query = request.raw_path.partition("?")
    signature.check(request.method, path, query, request.headers, payload_hash)


async def read_body(request: web.BaseRequest, limit: int, within_s: float) -> bytes | None:
    """The request body, or None once it is known to exceed ``limit``: from Content-Length before
    reading anything, or, for a chunked body, as soon as the bytes read pass it. A client waiting
    for ``100 Continue`` is told to send its body here, when it is wanted. A body still arriving
    after ``within_s`` seconds raises TimeoutError (a slow client holds nothing for long); one
    already here, the usual case, is taken without a timer. Raises ``Refusal`` (400) for a body
    that cannot be read as sent (a broken Content-Encoding, a truncated chunk)."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    try:
        if request.content.is_eof():  # all here already: one copy out of the buffer
            body = request.content.read_nowait()
            return None if len(body) > limit else body
        if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the access log counts the response's bytes only
        async with asyncio.timeout(within_s):
            buffer = bytearray()
            while chunk := await request.content.read(1 << 16):
                buffer += chunk
                if len(buffer) > limit:
                    return None
            return bytes(buffer)
    except RequestPayloadError as e:
        raise Refusal(400, "InvalidRequestContentException",
                      f"The request body is unreadable: {e}") from None


async def take_body(request: web.BaseRequest, server: ServerConfig, mode: AuthMode, limit: int,
                    operation: str) -> bytes:
    """The body of a request that may have it: its credentials pass (``mode``), it is within
    ``limit`` bytes, it arrived within the body timeout. Raises ``Refusal`` otherwise."""
    signature = check_credentials(request, server, mode, time.time())
    try:
        body = await read_body(request, limit, server.body_timeout_s)
    except TimeoutError:
        raise Refusal(408, "RequestTimeoutException", "The request body was not received in time") \
            from None
    if body is None:
        raise Refusal(413, "RequestTooLargeException",
                      f"Request must be smaller than {limit} bytes for the {operation} operation")
    if signature is not None:
        if len(body) > HASH_IN_THREAD:
            digest = await asyncio.to_thread(lambda: hashlib.sha256(body).hexdigest())
        else:
            digest = hashlib.sha256(body).hexdigest()
        try:
            check_signature(request, signature, digest)
        except auth.Refused as e:
            raise Refusal(403, e.code, e.message) from None
    return body
