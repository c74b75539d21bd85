"""``GET /metrics``: the daemon's registry of instruments, in Prometheus' text format (or
OpenMetrics, when the scraper's ``Accept`` asks for it)."""

from __future__ import annotations

from aiohttp import web

from router.run.registry import Registry


def scrape(request: web.BaseRequest, registry: Registry) -> web.Response:
    body, content_type = registry.metrics.exposition(request.headers.get("Accept", ""))
    # The type carries parameters (version, charset) that aiohttp's content_type argument refuses.
    return web.Response(body=body, headers={"Content-Type": content_type})
