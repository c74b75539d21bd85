"""The daemon's one HTTP server: the Lambda API, triggers, and the operations endpoints."""

from __future__ import annotations

from aiohttp import web

from router import management
from router.awserror import aws_error
from router.metrics import render
from router.registry import REGISTRY, Registry
from sources import http_trigger, invoke_api


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[REGISTRY].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=render(request.app[REGISTRY]),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def unknown_operation(request: web.Request) -> web.Response:
    """Any other Lambda API path answers in AWS's shape, not aiohttp's HTML."""
    return aws_error(404, "UnknownOperationException",
                     f"Unknown operation: {request.method} {request.path}")


def build_app(registry: Registry) -> web.Application:
    # No client_max_size: it bounds only request.read(), which nothing calls. Each source reads
    # through read_body with its own limit (6 MB to invoke, a 50 MB zip to deploy), so that a
    # refusal comes in the shape its clients expect.
    app = web.Application()
    app[REGISTRY] = registry
    app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke_api.invoke)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    management.add_routes(app)
    app.router.add_route("*", r"/{version:20\d\d-\d\d-\d\d}/{rest:.*}", unknown_operation)
    # One resource for /urls/NAME and /urls/NAME/…: the hottest path is matched at the first try.
    app.router.add_route("*", "/urls/{function}{path:(?:/.*)?}", http_trigger.function_url)
    app.router.add_route("*", "/{path:.*}", http_trigger.route)  # declared routes: the rest
    return app
