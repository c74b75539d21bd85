"""HTTP triggers as an event source: declared routes and function URLs (``/urls/NAME/…``).

Each request becomes an API Gateway HTTP API payload 2.0 event; the outcome goes back as API
Gateway would send it: the function's response, 502 for a function error, 504 for a timeout, 429
for a throttle, 404 when no route matches, 413 for a body over the synchronous payload limit.
"""

from __future__ import annotations

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from router.body import UnreadableBody, read_body
from router.invocation import MAX_SYNC_PAYLOAD, Invocation
from router.pool import FunctionPool
from router.registry import Registry
from sources import apigw

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


def url_path(raw: str) -> str:
    """The path a function URL's function sees: ``/urls/NAME/rest`` → ``/rest``, found by the slash
    after NAME as sent (which may be percent-encoded, so its decoded length says nothing)."""
    slash = raw.find("/", len("/urls/"))
    return raw[slash:] if slash >= 0 else "/"


async def run(request: web.BaseRequest, registry: Registry, pool: FunctionPool, *, route_key: str,
              raw_path: str, raw_query: str, path_params: dict[str, str],
              source: str) -> web.Response:
    try:
        body = await read_body(request, MAX_SYNC_PAYLOAD, registry.config.server.body_timeout_s)
    except TimeoutError:
        return refuse(408, "Request Timeout")
    except UnreadableBody:
        return refuse(400, "Bad Request")
    if body is None:
        return refuse(413, "Request Entity Too Large")
    if registry.draining:
        return refuse(503, "Service Unavailable")
    req = apigw.HttpRequest(
        method=request.method, raw_path=raw_path, raw_query=raw_query,
        headers=tuple(request.headers.items()), body=body, source_ip=request.remote or "",
        protocol=f"HTTP/{request.version.major}.{request.version.minor}")
    inv = Invocation(b"", registry.loop.create_future(), source=source)
    event = apigw.build_event(req, route_key=route_key, path_params=path_params,
                              request_id=inv.request_id, account_id=registry.config.server.account_id,
                              api_id=API_ID, now=inv.received)
    inv.payload = msgspec.json.encode(event)
    if len(inv.payload) > MAX_SYNC_PAYLOAD:  # base64 grows a body by a third
        return refuse(413, "Request Entity Too Large")
    pool.submit(inv)
    outcome = await inv.future
    if outcome.status == "success":
        response = apigw.to_response(outcome.payload)
    else:
        response = apigw.error_response(*FAILED.get(outcome.status, FUNCTION_ERROR))
    return reply(response, inv.request_id)


async def function_url(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    pool = registry.lookup(name)
    if pool is None or not pool.config.url.enabled:
        return refuse(404, "Not Found")
    if not registry.authorized(request, pool.config.url.auth):
        return refuse(403, "Forbidden")
    path, _, query = request.raw_path.partition("?")
    return await run(request, registry, pool, route_key="$default", raw_path=url_path(path),
                     raw_query=query, path_params={}, source="url")


async def route(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    """A declared route (``name`` is unused: a route's path names no function)."""
    found = registry.routes.match(request.method, request.path)
    if found is None:
        return refuse(404, "Not Found")
    matched, params = found
    pool = registry.lookup(matched.target)
    if pool is None:
        return refuse(404, "Not Found")
    if not registry.authorized(request, matched.auth):
        return refuse(403, "Forbidden")
    path, _, query = request.raw_path.partition("?")
    return await run(request, registry, pool, route_key=matched.key, raw_path=path,
                     raw_query=query, path_params=params, source="http")
