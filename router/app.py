"""The daemon's one HTTP server: the Lambda API, triggers, and the operations endpoints.

It is aiohttp's low-level server with a dispatch of its own rather than a ``web.Application``:
Headwater has a dozen fixed paths plus its trigger routes, and ``resolve`` picks a handler for them in
a few dictionary lookups, where the application's router, match info and per-request loop lookup
cost about a tenth of a function URL's whole time in the router (see the README's performance
notes).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from router import management
from router.awserror import aws_error
from router.metrics import render
from router.registry import Handler, Registry
from sources import http_trigger, invoke_api


async def healthz(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    if registry.draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    return web.Response(text=render(registry),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def unknown_operation(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    """Any other Lambda API path answers in AWS's shape, not as an HTTP route would."""
    return aws_error(404, "UnknownOperationException",
                     f"Unknown operation: {request.method} {request.path}")


FUNCTIONS = "/2015-03-31/functions"
URLS = "/urls/"
_COLLECTION: dict[str, Handler] = {"GET": management.list_functions,
                                   "POST": management.create_function}
# Paths served as they are, by method (HEAD is served as GET).
PATHS: dict[str, dict[str, Handler]] = {
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": metrics},
    FUNCTIONS: _COLLECTION,
    FUNCTIONS + "/": _COLLECTION,
}
# The Lambda API on one function, /2015-03-31/functions/NAME[/OPERATION], by operation and method.
FUNCTION_PATHS: dict[str, dict[str, Handler]] = {
    "": {"GET": management.get_function, "DELETE": management.delete_function},
    "/invocations": {"POST": invoke_api.invoke},
    "/configuration": {"GET": management.get_configuration,
                       "PUT": management.update_configuration},
    "/code": {"PUT": management.update_code},
}
_LAMBDA_API = re.compile(r"/20\d\d-\d\d-\d\d/")


def resolve(method: str, path: str) -> tuple[Handler, str]:
    """The handler for ``method`` on ``path``, and the function name the path carries ("" if
    none). ``path`` is percent-decoded except for ``%2F`` and ``%25`` (yarl's ``path_safe``), so
    an encoded slash stays inside the segment it was sent in; the name is decoded whole. A function
    URL is /urls/NAME[/…]; any other path under a Lambda API version is an unknown operation; every
    other request is for the declared HTTP routes."""
    if path.startswith(URLS):
        name = path[len(URLS):].partition("/")[0]
        if name:
            return http_trigger.function_url, unquote(name)
    wanted = "GET" if method == "HEAD" else method
    handler = PATHS.get(path, {}).get(wanted)
    if handler is not None:
        return handler, ""
    if path.startswith(FUNCTIONS + "/"):
        name, slash, operation = path[len(FUNCTIONS) + 1:].partition("/")
        handler = FUNCTION_PATHS.get(slash + operation, {}).get(wanted)
        if name and handler is not None:
            return handler, unquote(name)
    if _LAMBDA_API.match(path):
        return unknown_operation, ""
    return http_trigger.route, ""


class Dispatcher:
    """The server's request handler: resolves each request and runs what serves it."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        handler, name = resolve(request.method, request.rel_url.path_safe)
        expect = request.headers.get("Expect")
        if expect and request.version >= (1, 1):
            # A client that waits to send its body until told to (curl does, past 1 KB).
            if expect.lower() != "100-continue":
                return web.Response(status=417, text=f"Unknown Expect: {expect}")
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the access log counts the response's bytes only
        return await handler(request, self.registry, name)


def build_server(registry: Registry, **settings: Any) -> web.Server:
    """The server for ``registry``; ``settings`` are aiohttp's (keep-alive, access log…)."""
    return web.Server(Dispatcher(registry), **settings)
