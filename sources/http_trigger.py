"""HTTP triggers as an event source: declared routes and function URLs (``/urls/NAME/…``).

Each request becomes an API Gateway HTTP API payload 2.0 event; the outcome goes back as API
Gateway would send it: the function's response, 502 for a function error, 504 for a timeout, 429
for a throttle, 404 when no route matches, 413 for a body over the synchronous payload limit. A
function URL in ``RESPONSE_STREAM`` mode answers a function that streams as it streams
(``http_stream``).
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from router.api.body import Refusal, take_body
from router.api.cors import is_preflight, preflight_headers, response_headers
from router.config import AuthMode, effective_auth
from router.intake.intake import Unavailable
from router.intake.invocation import MAX_SYNC_PAYLOAD, Invocation
from router.intake.stream import ResponseStream
from router.run.pool import FunctionPool
from router.run.registry import Registry
from sources import apigw, http_stream

log = logging.getLogger("headwater.http")

API_ID = "headwater"


# How API Gateway words a failed invocation; any other failure is the function's: 502.
FAILED = {"throttled": (429, "Too Many Requests"), "timeout": (504, "Endpoint request timed out")}
FUNCTION_ERROR = (502, "Internal Server Error")


def reply(response: apigw.HttpResponse, request_id: str | None = None) -> web.Response:
    headers = CIMultiDict(response.headers)
    if request_id is not None:
        headers["apigw-requestid"] = request_id
    return web.Response(status=response.status, body=response.body, headers=headers)


def refuse(status: int, message: str) -> web.Response:
    return reply(apigw.error_response(status, message))


# API Gateway's words for a request refused before it reaches the function.
REFUSED = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout",
           413: "Request Entity Too Large"}


def refused(e: Refusal) -> web.Response:
    return refuse(e.status, REFUSED.get(e.status, "Bad Request"))


async def not_found(request: web.BaseRequest, registry: Registry) -> web.Response:
    """404, but on a daemon with credentials only to a caller who has them: an anonymous caller
    gets the same 403 whether or not a function or route exists, so names cannot be probed."""
    try:
        await take_body(request, registry.config.server, registry.api_mode, MAX_SYNC_PAYLOAD, "Invoke")
    except Refusal as e:
        return refused(e)
    return refuse(404, "Not Found")


def url_path(raw: str) -> str:
    """The path a function URL's function sees: ``/urls/NAME/rest`` → ``/rest``, found by the slash
    after NAME as sent (which may be percent-encoded, so its decoded length says nothing)."""
    slash = raw.find("/", len("/urls/"))
    return raw[slash:] if slash >= 0 else "/"


async def run(request: web.BaseRequest, registry: Registry, pool: FunctionPool, mode: AuthMode, *,
              route_key: str, raw_path: str, raw_query: str, path_params: dict[str, str],
              source: str, streaming: bool = False,
              extra: dict[str, str] | None = None) -> web.StreamResponse:
    """The function run for an HTTP request; ``extra``: headers a streamed answer must carry
    from its start (the caller adds them to any other)."""
    try:
        body = await take_body(request, registry.config.server, mode, MAX_SYNC_PAYLOAD, "Invoke")
    except Refusal as e:
        return refused(e)
    source_ip = request.remote or ""
    if registry.trusted:  # behind a balancer: its forwarding headers name the caller
        source_ip = apigw.client_ip(source_ip, request.headers.get("X-Forwarded-For", ""),
                                    request.headers.get("Forwarded", ""), registry.trusted)
    req = apigw.HttpRequest(
        method=request.method, raw_path=raw_path, raw_query=raw_query,
        headers=tuple(request.headers.items()), body=body, source_ip=source_ip,
        protocol=f"HTTP/{request.version.major}.{request.version.minor}")
    inv = Invocation(b"", registry.loop.create_future(), source=source,
                     stream=ResponseStream() if streaming else None)
    event = apigw.build_event(req, route_key=route_key, path_params=path_params,
                              request_id=inv.request_id, account_id=registry.config.server.account_id,
                              api_id=API_ID, now=inv.received)
    inv.payload = msgspec.json.encode(event)
    if len(inv.payload) > MAX_SYNC_PAYLOAD:  # base64 grows a body by a third
        return refuse(413, "Request Entity Too Large")
    try:
        future = registry.intake.submit(pool, inv)
    except Unavailable:
        return refuse(503, "Service Unavailable")
    if inv.stream is not None:
        try:
            if (streamed := await http_stream.streamed(request, inv, extra)) is not None:
                return streamed
        except http_stream.BadPrelude as e:
            log.warning("%s: a streamed response with a bad prelude: %s", pool.config.name, e)
            return reply(apigw.error_response(*FUNCTION_ERROR), inv.request_id)
    outcome = await future
    if outcome.status == "success":
        response = apigw.to_response(outcome.payload)
    else:
        response = apigw.error_response(*FAILED.get(outcome.status, FUNCTION_ERROR))
    return reply(response, inv.request_id)


async def function_url(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    pool = registry.lookup(name)
    mode = registry.url_mode(pool) if pool is not None else None
    if pool is None or mode is None:
        return await not_found(request, registry)
    cors = pool.config.url.cors
    if cors is not None and is_preflight(request.method, request.headers):
        # Answered by the URL itself, before any credentials: a browser sends none with it.
        return web.Response(status=200, headers=preflight_headers(cors, request.headers))
    path, _, query = request.raw_path.partition("?")
    extra = response_headers(cors, request.headers) \
        if cors is not None and "Origin" in request.headers else None
    response = await run(request, registry, pool, mode, route_key="$default",
                         raw_path=url_path(path), raw_query=query, path_params={}, source="url",
                         streaming=pool.config.url.invoke_mode == "RESPONSE_STREAM", extra=extra)
    # Every answer of the URL carries them, a refusal too (a browser reads none without them);
    # a streamed one was given them before its head went out.
    if extra and not response.prepared:
        response.headers.update(extra)
    return response


async def route(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    """A declared route (``name`` is unused: a route's path names no function)."""
    found = registry.routes.match(request.method, request.path)
    pool = registry.lookup(found[0].target) if found is not None else None
    if found is None or pool is None:
        return await not_found(request, registry)
    matched, params = found
    path, _, query = request.raw_path.partition("?")
    return await run(request, registry, pool, effective_auth(matched.auth, registry.config.server),
                     route_key=matched.key, raw_path=path, raw_query=query, path_params=params,
                     source="http")
