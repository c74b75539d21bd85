"""The dead-letter store over HTTP, for ``headwater dlq``: list, show, redrive.

Not a Lambda API (Lambda hands failed events to a destination and keeps nothing), so it lives under
``/headwater/``, in the Lambda API's JSON style and with its credentials and error shapes:

- ``GET /headwater/dead-letters[?FunctionName=F&MaxItems=N]``
- ``GET /headwater/dead-letters/REQUEST_ID``: with the payload and the destination record
- ``POST /headwater/dead-letters/redrive`` ``{"FunctionName": F, "RequestIds": [...]}``: the
  event runs again as a new asynchronous event (a fresh request id, the payload byte for byte);
  without ``RequestIds``, every dead letter of F.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.management import NO_BODY, authenticated
from router.asyncq.store import DeadLetter, StoreError
from router.run.registry import Registry
from sources.samples import iso_time

PREFIX = "/headwater/dead-letters"
MAX_ITEMS = 1000


class Summary(msgspec.Struct, rename="pascal"):
    request_id: str
    function_name: str
    source: str
    condition: str
    approximate_invoke_count: int
    received_at: str
    dead_at: str


class Detail(Summary, rename="pascal"):
    payload: msgspec.Raw
    record: msgspec.Raw


class Redrive(msgspec.Struct, rename="pascal", forbid_unknown_fields=True):
    function_name: str
    request_ids: list[str] | None = None


def _time(at: float) -> str:
    return iso_time(datetime.fromtimestamp(at, UTC))


def summary(d: DeadLetter) -> Summary:
    return Summary(d.request_id, d.function, d.source, d.condition, d.invokes,
                   _time(d.received_at), _time(d.dead_at))


def detail(d: DeadLetter) -> Detail:
    return Detail(d.request_id, d.function, d.source, d.condition, d.invokes, _time(d.received_at),
                  _time(d.dead_at), msgspec.Raw(d.payload), msgspec.Raw(d.record))


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(value), status=status,
                        content_type="application/json")


def unavailable(e: Exception) -> web.Response:
    return aws_error(503, "ServiceException", f"the event store cannot be read: {e}")


@authenticated(NO_BODY, "ListDeadLetters")
async def list_dead_letters(request: web.BaseRequest, registry: Registry, _: str,
                            body: bytes) -> web.Response:
    function = request.query.get("FunctionName") or None
    try:
        limit = int(request.query.get("MaxItems", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_ITEMS:
        return aws_error(400, "InvalidParameterValueException",
                         f"MaxItems: expected a number from 1 to {MAX_ITEMS}")
    try:
        dead = await registry.asyncq.store.dead_letters(function, limit)
    except StoreError as e:
        return unavailable(e)
    return _json({"DeadLetters": [summary(d) for d in dead]})


@authenticated(NO_BODY, "GetDeadLetter")
async def get_dead_letter(request: web.BaseRequest, registry: Registry, request_id: str,
                          body: bytes) -> web.Response:
    try:
        found = await registry.asyncq.store.dead_letter_get(request_id)
    except StoreError as e:
        return unavailable(e)
    if found is None:
        return aws_error(404, "ResourceNotFoundException", f"No dead letter {request_id}")
    return _json(detail(found))


@authenticated(64 * 1024, "RedriveDeadLetters")
async def redrive(request: web.BaseRequest, registry: Registry, _: str,
                  body: bytes) -> web.Response:
    try:
        wanted = msgspec.json.decode(body or b"{}", type=Redrive)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        return aws_error(400, "InvalidRequestContentException", f"Could not parse request: {e}")
    if registry.lookup(wanted.function_name) is None:
        return aws_error(404, "ResourceNotFoundException",
                         f"Function not found: {wanted.function_name}")
    try:
        ids = await registry.asyncq.store.redrive(wanted.function_name, wanted.request_ids,
                                                  now=time.time())
    except StoreError as e:
        return unavailable(e)
    registry.asyncq.wake()
    return _json({"RequestIds": ids})
