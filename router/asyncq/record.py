"""Lambda's destination record: what ``on_success`` and ``on_failure`` receive for an event.

``requestPayload`` and ``responsePayload`` are the event's and the function's JSON, spliced in as
the same bytes (never decoded and re-encoded). ``responseContext`` and ``responsePayload`` are
there only when the function ran at least once: an event that aged out while it was throttled
has no response to report.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from router.asyncq.retry import Condition
from sources.samples import iso_time


class RequestContext(msgspec.Struct, frozen=True, rename="camel"):
    request_id: str
    function_arn: str
    condition: Condition
    approximate_invoke_count: int


class ResponseContext(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    status_code: int
    executed_version: str
    function_error: str | None = None  # "Unhandled" when the function failed


class Response(msgspec.Struct, frozen=True):
    """The last attempt's response: its JSON, and whether it was an error."""

    payload: bytes
    function_error: str | None = None


class DestinationRecord(msgspec.Struct, frozen=True, omit_defaults=True, rename="camel"):
    version: str
    timestamp: str
    request_context: RequestContext
    request_payload: msgspec.Raw
    response_context: ResponseContext | None = None
    response_payload: msgspec.Raw | None = None


def destination_record(*, request_id: str, function_arn: str, condition: Condition,
                       invoke_count: int, request_payload: bytes, response: Response | None,
                       at: float) -> bytes:
    context = RequestContext(request_id, function_arn, condition, invoke_count)
    when = iso_time(datetime.fromtimestamp(at, UTC))
    if response is None:
        return msgspec.json.encode(DestinationRecord("1.0", when, context, msgspec.Raw(request_payload)))
    return msgspec.json.encode(DestinationRecord(
        "1.0", when, context, msgspec.Raw(request_payload),
        ResponseContext(200, "$LATEST", response.function_error),
        # A function that returns nothing answers null, as Lambda's records show it.
        msgspec.Raw(response.payload or b"null")))
