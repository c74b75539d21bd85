"""A function's recent log over HTTP, for ``headwater logs``: the lines its ring holds.

Not a Lambda API (Lambda's logs are CloudWatch Logs'), so it lives under ``/headwater/``, with the
Lambda API's credentials and error shapes:

``GET /headwater/logs/FUNCTION[?StartTime=MS&After=TOKEN&Wait=S]``: the lines no older than
``StartTime`` (epoch milliseconds) and after ``After`` (the ``NextToken`` of an earlier answer),
oldest first, as ``{"Events": [...], "NextToken": "..."}``; each event has the fields of a JSON log
line. With ``Wait`` (seconds, at most ``MAX_WAIT_S``) and nothing to return yet, the answer waits
for the function's next line: a follower's long poll.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.management import readable
from router.logs.format import Clock, Line, request_of
from router.logs.ring import Entry
from router.run.registry import Registry
from router.store.store import Deployed

PREFIX = "/headwater/logs/"
MAX_WAIT_S = 20.0
ANSWER_BYTES = 1 << 20  # an answer stops after the entry that passes this; NextToken goes on


class Events(msgspec.Struct, rename="pascal"):
    events: list[Line]
    next_token: str


class Query(msgspec.Struct, frozen=True):
    start_ms: int = 0
    after: int = 0
    wait_s: float = 0.0


def parse_query(query: dict[str, str]) -> Query | str:
    """The query's values, or what is wrong with them."""
    try:
        start_ms = int(query.get("StartTime", "0"))
        after = int(query.get("After", "0"))
        wait_s = float(query.get("Wait", "0"))
    except ValueError:
        return "StartTime and After must be integers, Wait a number of seconds"
    if start_ms < 0 or after < 0 or not 0 <= wait_s <= MAX_WAIT_S:
        return f"StartTime and After must not be negative, Wait from 0 to {MAX_WAIT_S:.0f}"
    return Query(start_ms, after, wait_s)


def events(entries: list[Entry], function: str) -> list[Line]:
    clock = Clock()
    return [Line(clock.stamp(e.time), e.level, e.logger, line.decode(errors="replace"), function,
                 request_of(e.request_id))
            for e in entries for line in e.text[:-1].split(b"\n")]


def take(found: list[Entry]) -> list[Entry]:
    """The first entries of ``found`` up to ``ANSWER_BYTES`` (one at least)."""
    size = 0
    for i, entry in enumerate(found):
        size += len(entry.text)
        if size > ANSWER_BYTES:
            return found[:max(i, 1)]
    return found


@readable("GetFunctionLogs")
async def get_logs(request: web.BaseRequest, body: bytes, registry: Registry,
                   deployed: Deployed) -> web.Response:
    query = parse_query(dict(request.query))
    if isinstance(query, str):
        return aws_error(400, "InvalidParameterValueException", query)
    name = deployed.function.name
    ring = registry.function_logs.rings.get(name)
    since = query.start_ms / 1000
    # A token from before a restart (positions start again at 0) reads the ring from its start.
    after = query.after if query.after <= ring.seq else 0
    found = list(ring.after(after, since))
    if not found and query.wait_s and not registry.draining:
        await ring.wait(query.wait_s)
        found = list(ring.after(after, since))
    found = take(found)
    token = found[-1].seq if found else ring.seq
    return web.Response(body=msgspec.json.encode(Events(events(found, name), str(token))),
                        content_type="application/json")
