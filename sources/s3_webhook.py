"""S3 event JSON pushed over HTTP: ``POST /events/s3/{trigger}``, the webhook target of self-hosted
S3-compatible stores (MinIO's webhook notifications), authenticated with a bearer token of
[server].tokens.

Each record the trigger wants is one invocation of ``{"Records": [record]}``, as from the queue; the
answer comes once they all ran: 200 when all succeeded, 502 when any failed (so the store sends the
event again), 503 while the daemon cannot take work.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
from aiohttp import web

from router.api.body import Refusal, take_body
from router.config import S3Trigger, trigger_name
from router.intake.intake import Unavailable
from router.intake.invocation import MAX_SYNC_PAYLOAD, Invocation
from router.run.registry import Registry
from sources import s3_event
from sources.poller import S3Match

PREFIX = "/events/s3/"


def find(registry: Registry, name: str) -> tuple[str, S3Trigger] | None:
    for fn in registry.config.functions:
        for i, trigger in enumerate(fn.triggers):
            if isinstance(trigger, S3Trigger) and trigger_name(fn, i) == name:
                return fn.name, trigger
    return None


def reply(status: int, **body: object) -> web.Response:
    return web.json_response(body, status=status)


async def receive(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
    # The token first: an anonymous caller learns nothing, not even which triggers exist.
    try:
        body = await take_body(request, registry.config.server, "token", MAX_SYNC_PAYLOAD, "S3Event")
    except Refusal as e:
        return reply(e.status, message=e.message)
    found = find(registry, name)
    pool = registry.lookup(found[0]) if found is not None else None
    if found is None or pool is None:
        return reply(404, message=f"no S3 trigger named {name!r}")
    match = S3Match.of(found[1])
    try:
        records = msgspec.json.decode(body).get("Records")
    except (msgspec.DecodeError, AttributeError, RecursionError):
        return reply(400, message="the body is not an S3 event (JSON with Records)")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        return reply(400, message="the body is not an S3 event (JSON with Records)")
    chosen = [r for r in records if match.wants(r)]
    futures = []
    try:
        for record in chosen:
            inv = Invocation(json.dumps(s3_event.s3_event([record])).encode(),
                             registry.loop.create_future(), source="s3", source_arn=match.arn)
            futures.append(registry.intake.submit(pool, inv))
    except Unavailable as e:
        if futures:
            await asyncio.gather(*futures)
        return reply(503, message=str(e))
    outcomes = await asyncio.gather(*futures)
    failed = sum(o.status != "success" for o in outcomes)
    return reply(502 if failed else 200, invoked=len(outcomes), failed=failed,
                 ignored=len(records) - len(chosen))
