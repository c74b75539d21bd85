"""The daemon's one HTTP server: the Lambda API, triggers, and the operations endpoints.

It is aiohttp's low-level server with a dispatch of its own rather than a ``web.Application``:
Headwater has a dozen fixed paths plus its trigger routes, and ``resolve`` picks a handler for them in
a few dictionary lookups, where the application's router, match info and per-request loop lookup
cost about a tenth of a function URL's whole time in the router (see the README's performance
notes).
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from router.api import dlq, esm, event_invoke, layers, logs, management, urls
from router.api.awserror import aws_error
from router.api.body import Refusal, take_body
from router.api.httplog import RequestErrors
from router.api.metrics import scrape
from router.health import readiness
from router.metrics.instruments import HttpMetrics
from router.run.registry import Handler, Registry
from sources import http_trigger, invoke_api, invoke_stream, s3_webhook


async def healthz(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    status, body = readiness(registry)
    return web.json_response(body, status=status)


async def open_metrics(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    return scrape(request, registry)


async def metrics(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    """/metrics names every function: on a daemon with credentials, only for callers with them."""
    try:
        await take_body(request, registry.config.server, registry.api_mode, 0, "GetMetrics")
    except Refusal as e:
        return e.response()
    return await open_metrics(request, registry, name)


async def unknown_operation(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    """Any other Lambda API path answers in AWS's shape, not as an HTTP route would."""
    return aws_error(404, "UnknownOperationException",
                     f"Unknown operation: {request.method} {request.path}")


FUNCTIONS = "/2015-03-31/functions"
MAPPINGS = "/2015-03-31/event-source-mappings"
URLS = "/urls/"
_COLLECTION: dict[str, Handler] = {"GET": management.list_functions,
                                   "POST": management.create_function}
_MAPPINGS: dict[str, Handler] = {"GET": esm.list_mappings, "POST": esm.create_mapping}
# The operations endpoints, with /metrics open: what [server].metrics_listen serves.
OPERATIONS: dict[str, dict[str, Handler]] = {
    "/healthz": {"GET": healthz},
    "/readyz": {"GET": readyz},
    "/metrics": {"GET": open_metrics},
}
HEALTH = frozenset({healthz, readyz})
# Paths served as they are, by method (HEAD is served as GET).
PATHS: dict[str, dict[str, Handler]] = {
    **OPERATIONS,
    "/metrics": {"GET": metrics},
    FUNCTIONS: _COLLECTION,
    FUNCTIONS + "/": _COLLECTION,
    MAPPINGS: _MAPPINGS,
    MAPPINGS + "/": _MAPPINGS,
    layers.PREFIX: {"GET": layers.list_or_find},
    layers.PREFIX + "/": {"GET": layers.list_or_find},
    dlq.PREFIX: {"GET": dlq.list_dead_letters},
    dlq.PREFIX + "/redrive": {"POST": dlq.redrive},
}
LAYERS = layers.PREFIX + "/"  # a layer's versions: their paths are layers.resolve's
# The Lambda API on one resource, PREFIX/NAME[/OPERATION], by prefix, operation and method: the
# function operations (Invoke first, the hot path), InvokeWithResponseStream, function URL configs,
# tags (of an ARN), and event source mappings (by UUID).
RESOURCES: dict[str, dict[str, dict[str, Handler]]] = {
    FUNCTIONS + "/": {
        "": {"GET": management.get_function, "DELETE": management.delete_function},
        "/invocations": {"POST": invoke_api.invoke},
        "/configuration": {"GET": management.get_configuration,
                           "PUT": management.update_configuration},
        "/code": {"PUT": management.update_code},
    },
    "/2021-11-15/functions/": {
        "/response-streaming-invocations": {"POST": invoke_stream.invoke_with_response_stream},
    },
    "/2021-10-31/functions/": {
        "/url": {"POST": urls.create_url, "GET": urls.get_url, "PUT": urls.update_url,
                 "DELETE": urls.delete_url},
        "/urls": {"GET": urls.list_urls},
    },
    "/2019-09-25/functions/": {
        "/event-invoke-config": {"PUT": event_invoke.put_config, "POST": event_invoke.update_config,
                                 "GET": event_invoke.get_config,
                                 "DELETE": event_invoke.delete_config},
        "/event-invoke-config/list": {"GET": event_invoke.list_configs},
    },
    "/2017-03-31/tags/": {
        "": {"GET": management.list_tags, "POST": management.tag_resource,
             "DELETE": management.untag_resource},
    },
    MAPPINGS + "/": {
        "": {"GET": esm.get_mapping, "PUT": esm.update_mapping, "DELETE": esm.delete_mapping},
    },
}
_LAMBDA_API = re.compile(r"/20\d\d-\d\d-\d\d/")


def resolve(method: str, path: str) -> tuple[Handler, str]:
    """The handler for ``method`` on ``path``, and the function name the path carries ("" if
    none). ``path`` is percent-decoded except for ``%2F`` and ``%25`` (yarl's ``path_safe``), so
    an encoded slash stays inside the segment it was sent in; the name is decoded whole. A function
    URL is /urls/NAME[/…]; any other path under a Lambda API version is an unknown operation; a POST
    to /events/s3/NAME is an S3 trigger's webhook; every other request is for the declared HTTP
    routes."""
    if path.startswith(URLS):
        name = path[len(URLS):].partition("/")[0]
        if name:
            return http_trigger.function_url, unquote(name)
    wanted = "GET" if method == "HEAD" else method
    handler = PATHS.get(path, {}).get(wanted)
    if handler is not None:
        return handler, ""
    if _LAMBDA_API.match(path):
        for prefix, operations in RESOURCES.items():
            if path.startswith(prefix):
                name, slash, operation = path[len(prefix):].partition("/")
                handler = operations.get(slash + operation, {}).get(wanted)
                if name and handler is not None:
                    return handler, unquote(name)
        # After the function operations, Invoke's among them: a layer version's path is rarer.
        if path.startswith(LAYERS):
            return layers.resolve(wanted, path[len(LAYERS):]) or (unknown_operation, "")
        return unknown_operation, ""
    if path.startswith(dlq.PREFIX + "/") and wanted == "GET":
        name = path[len(dlq.PREFIX) + 1:]
        if name and "/" not in name:
            return dlq.get_dead_letter, unquote(name)
    if path.startswith(logs.PREFIX) and wanted == "GET":
        name = path[len(logs.PREFIX):]
        if name and "/" not in name:
            return logs.get_logs, unquote(name)
    # After the Invoke API and function URLs, which are the hot paths: a webhook call is rare.
    if path.startswith(s3_webhook.PREFIX) and method == "POST":
        name = path[len(s3_webhook.PREFIX):]
        if name and "/" not in name:
            return s3_webhook.receive, unquote(name)
    return http_trigger.route, ""


def resolve_operations(method: str, path: str) -> Handler:
    """What the metrics address serves: the operations endpoints, nothing else."""
    handler = OPERATIONS.get(path, {}).get("GET" if method == "HEAD" else method)
    return handler or not_served


async def not_served(request: web.BaseRequest, registry: Registry, _: str) -> web.Response:
    return web.Response(status=404, text="Not Found")


# The kind of route each handler serves, the label of the HTTP metrics; every other handler is
# the Lambda API's management side (functions, URLs, mappings, tags, dead letters, unknown paths).
KINDS: dict[Handler, str] = {
    invoke_api.invoke: "invoke",
    invoke_stream.invoke_with_response_stream: "invoke",
    logs.get_logs: "logs",
    http_trigger.function_url: "url",
    http_trigger.route: "route",
    healthz: "health",
    readyz: "health",
    metrics: "metrics",
    open_metrics: "metrics",
    s3_webhook.receive: "webhook",
    not_served: "other",
}


def kind_of(handler: Handler) -> str:
    return KINDS.get(handler, "management")


class Dispatcher:
    """The server's request handler: resolves each request, runs what serves it, and counts it
    by the kind of route (its metrics' handle looked up once per handler, then cached)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._counted: dict[Handler, HttpMetrics] = {}

    def route(self, request: web.BaseRequest) -> tuple[Handler, str]:
        return resolve(request.method, request.rel_url.path_safe)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        handler, name = self.route(request)
        try:
            expect = request.headers.get("Expect")
            # 100-continue is answered by read_body, once the credentials pass and the body is
            # wanted.
            if expect and request.version >= (1, 1) and expect.lower() != "100-continue":
                response: web.StreamResponse = web.Response(status=417,
                                                            text=f"Unknown Expect: {expect}")
            elif not self.registry.leaving:  # the one check the drain costs a request
                response = await handler(request, self.registry, name)
            else:
                response = await self._leaving(request, handler, name)
        except Exception:
            self._counts(handler).answered(500, time.perf_counter() - started)  # aiohttp's 500
            raise
        counted = self._counted.get(handler) or self._counts(handler)
        counted.answered(response.status, time.perf_counter() - started)
        return response

    def _counts(self, handler: Handler) -> HttpMetrics:
        counted = self._counted.get(handler)
        if counted is None:
            counted = self._counted[handler] = self.registry.metrics.http(kind_of(handler))
        return counted

    async def _leaving(self, request: web.BaseRequest, handler: Handler,
                       name: str) -> web.StreamResponse:
        if self.registry.intake.draining and handler not in HEALTH:
            # Past the drain delay: only the health endpoints still answer, so that nothing new
            # starts (a deploy, an invocation) while the daemon finishes what it has.
            response: web.StreamResponse = aws_error(
                503, "ServiceException", "Headwater is shutting down", headers={"Retry-After": "1"})
        else:
            response = await handler(request, self.registry, name)
        # Draining: the client reconnects, and the balancer sends it to another daemon.
        response.force_close()
        return response


class OperationsDispatcher(Dispatcher):
    """The handler of [server].metrics_listen: a scraper is answered until the daemon exits."""

    def route(self, request: web.BaseRequest) -> tuple[Handler, str]:
        return resolve_operations(request.method, request.rel_url.path_safe), ""

    async def _leaving(self, request: web.BaseRequest, handler: Handler,
                       name: str) -> web.StreamResponse:
        return await handler(request, self.registry, name)


# A request answered without its body being read (refused, say) has the rest of its body read and
# discarded for at most this long, so the client sees the answer rather than a reset, then the
# connection closes. aiohttp's default of 10 s kept the daemon reading 16 anonymous 60 MB uploads
# long after they had their 403, its RSS growing by 170 MB meanwhile.
LINGER_S = 1.0


def build_server(registry: Registry, operations_only: bool = False, **settings: Any) -> web.Server:
    """The server for ``registry`` (or, with ``operations_only``, for its metrics address);
    ``settings`` are aiohttp's (keep-alive, access log…). A malformed request is logged as one
    short line (``RequestErrors``), not aiohttp's traceback."""
    dispatcher = OperationsDispatcher(registry) if operations_only else Dispatcher(registry)
    return web.Server(dispatcher, logger=RequestErrors(), lingering_time=LINGER_S, **settings)
