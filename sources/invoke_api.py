"""The Lambda Invoke API as an event source: ``POST /2015-03-31/functions/{name}/invocations``.

The request body is the payload; it is checked to be JSON without being decoded and goes to the
worker as the same bytes. The outcome comes back in Lambda's shapes: 200 with the result, or 200 with
``X-Amz-Function-Error: Unhandled`` and the error object; request errors as AWS error responses.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.body import Refusal, take_body
from router.asyncq.runner import MAX_ASYNC_PAYLOAD
from router.intake.intake import Unavailable
from router.intake.invocation import MAX_SYNC_PAYLOAD, Invocation
from router.run.pool import UNAVAILABLE, FunctionPool
from router.run.registry import Registry, parse_function_name

MAX_CLIENT_CONTEXT = 3583  # bytes of base64, as Lambda allows
INVOCATION_TYPES = {"RequestResponse", "Event", "DryRun"}


def is_json(body: bytes) -> bool:
    """Whether ``body`` is one well-formed JSON value, checked without building it."""
    try:
        msgspec.json.decode(body, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError):  # nested deeper than any decoder will go
        return False
    # The skip above does not check the bytes of strings; the worker decodes them as UTF-8.
    if not body.isascii():
        try:
            body.decode()
        except UnicodeDecodeError:
            return False
    return True


def client_context(header: str) -> bytes | None:
    """The ``X-Amz-Client-Context`` header (base64 of a JSON object) as JSON bytes, or None."""
    if len(header) > MAX_CLIENT_CONTEXT:
        return None
    try:
        raw = base64.b64decode(header, validate=True)
        decoded = msgspec.json.decode(raw)
    except (binascii.Error, msgspec.DecodeError, ValueError):
        return None
    return raw if isinstance(decoded, dict) else None


async def invoke_async(registry: Registry, function: str, body: bytes) -> web.Response:
    """202 once the event is durably stored; it runs in the background (router/asyncq)."""
    if len(body) > MAX_ASYNC_PAYLOAD:
        return aws_error(413, "RequestTooLargeException",
                         f"Request must be smaller than {MAX_ASYNC_PAYLOAD} bytes for the "
                         "InvokeFunction operation")
    try:
        request_id = await registry.asyncq.accept(function, body)
    except Unavailable as e:
        return unavailable(e)
    return web.Response(status=202, headers={"x-amzn-RequestId": request_id})


class Call(msgspec.Struct):
    """An Invoke request that passed every check. (A Struct, made in C: a NamedTuple's
    ``__new__`` is Python's, and ``isinstance`` against ``web.Response``, an ABC, is slow too.)"""

    pool: FunctionPool
    body: bytes
    invocation_type: str
    client_context: bytes | None
    want_log: bool


async def checked_call(request: web.BaseRequest, registry: Registry, text: str, operation: str,
                       invocation_types: set[str]) -> Call | web.Response:
    """The request checked as Lambda checks it, or the error response that refuses it. The
    credentials come first: an anonymous caller learns nothing, not even which functions exist."""
    try:
        body = await take_body(request, registry.config.server, registry.api_mode,
                               MAX_SYNC_PAYLOAD, operation)
    except Refusal as e:
        return e.response()
    return parse_call(request, registry, text, body, invocation_types)


def parse_call(request: web.BaseRequest, registry: Registry, text: str, body: bytes,
               invocation_types: set[str]) -> Call | web.Response:
    """``checked_call``'s checks of a request whose credentials passed and whose ``body`` came."""
    qualifier = request.query.get("Qualifier") if request.query_string else None
    pool = registry.lookup(text)  # a plain name, the common case, needs no parsing
    if pool is None and (parsed := parse_function_name(text)) is not None:
        pool = registry.lookup(parsed[0])
        qualifier = qualifier or parsed[1]
    if pool is None or qualifier not in (None, "$LATEST"):
        arn = pool.arn if pool else f"function:{text}"
        return aws_error(404, "ResourceNotFoundException",
                         f"Function not found: {arn}" + (f":{qualifier}" if qualifier else ""))
    if pool.unavailable is not None:  # its image could not be had: Lambda's answer for a Failed one
        return aws_error(409, UNAVAILABLE,
                         f"Lambda failed to prepare the function's image: {pool.unavailable}")
    headers = request.headers
    invocation_type = headers.get("X-Amz-Invocation-Type", "RequestResponse")
    if invocation_type not in invocation_types:
        return aws_error(400, "InvalidParameterValueException",
                         f"Unsupported invocation type {invocation_type!r}: expected "
                         f"{' or '.join(sorted(invocation_types))}")
    log_type = headers.get("X-Amz-Log-Type", "None")
    if log_type not in ("None", "Tail"):
        return aws_error(400, "InvalidParameterValueException",
                         f"Unsupported log type {log_type!r}: expected None or Tail")
    if not body:
        body = b"{}"  # Lambda hands a function with no payload an empty object
    elif not is_json(body):
        return aws_error(400, "InvalidRequestContentException",
                         "Could not parse request body into json: the payload is not valid JSON")
    context = None
    if "X-Amz-Client-Context" in headers:
        context = client_context(headers["X-Amz-Client-Context"])
        if context is None:
            return aws_error(400, "InvalidRequestContentException",
                             "Client context must be a valid Base64-encoded JSON object of at most "
                             f"{MAX_CLIENT_CONTEXT} bytes")
    return Call(pool, body, invocation_type, context, log_type == "Tail")


def throttled(pool: FunctionPool, request_id: str) -> web.Response:
    reason = ("ReservedFunctionConcurrentInvocationLimitExceeded"
              if pool.config.max_workers == 0 else "ConcurrentInvocationLimitExceeded")
    return aws_error(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason,
                     headers={"Retry-After": "1", "x-amzn-RequestId": request_id})


def unavailable(e: Unavailable) -> web.Response:
    return aws_error(503, "ServiceException", str(e), headers={"Retry-After": "1"})


async def invoke(request: web.BaseRequest, registry: Registry, text: str) -> web.Response:
    call = await checked_call(request, registry, text, "InvokeFunction", INVOCATION_TYPES)
    if not isinstance(call, Call):
        return call
    if call.invocation_type == "DryRun":
        return web.Response(status=204, headers={"X-Amz-Executed-Version": "$LATEST"})
    if call.invocation_type == "Event":
        return await invoke_async(registry, call.pool.config.name, call.body)
    inv = Invocation(call.body, registry.loop.create_future(), source="invoke",
                     client_context=call.client_context, want_log=call.want_log)
    try:
        outcome = await registry.intake.submit(call.pool, inv)
    except Unavailable as e:
        return unavailable(e)
    out_headers = {"X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": inv.request_id}
    if outcome.status == "throttled":
        return throttled(call.pool, inv.request_id)
    if outcome.function_error:
        out_headers["X-Amz-Function-Error"] = "Unhandled"
    if outcome.log is not None:
        out_headers["X-Amz-Log-Result"] = base64.b64encode(outcome.log).decode()
    return web.Response(body=outcome.payload, headers=out_headers, content_type="application/json")
