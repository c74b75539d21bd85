"""InvokeWithResponseStream: ``POST /2021-11-15/functions/{name}/response-streaming-invocations``.

Checked like Invoke (``invoke_api.parse_call``; RequestResponse or DryRun only). The answer is 200
with an event stream (``sources.eventstream``): a ``PayloadChunk`` event for each chunk the function
streams, as it comes, then ``InvokeComplete`` with ``ErrorCode``/``ErrorDetails`` when it failed and
``LogResult`` when the log was asked for. A function that answers whole (any runtime's ordinary
response) is sent as one chunk, as Lambda does. A throttle, or a daemon that cannot take the
invocation, is refused in AWS's error shape before the stream begins.
"""

from __future__ import annotations

import base64

from aiohttp import web

from router.intake.intake import Unavailable
from router.intake.invocation import Invocation, Outcome
from router.intake.stream import ResponseStream
from router.run.registry import Registry
from sources import eventstream
from sources.invoke_api import Call, checked_call, throttled, unavailable

INVOCATION_TYPES = {"RequestResponse", "DryRun"}


def completion(outcome: Outcome) -> bytes:
    """The ``InvokeComplete`` event of an invocation that has ended."""
    log = base64.b64encode(outcome.log).decode() if outcome.log is not None else None
    if not outcome.function_error:
        return eventstream.invoke_complete(log_result=log)
    return eventstream.invoke_complete(outcome.error_type or "Unhandled",
                                       outcome.payload.decode(errors="replace"), log)


async def invoke_with_response_stream(request: web.BaseRequest, registry: Registry,
                                      text: str) -> web.StreamResponse:
    call = await checked_call(request, registry, text, "InvokeWithResponseStream", INVOCATION_TYPES)
    if not isinstance(call, Call):
        return call
    if call.invocation_type == "DryRun":
        return web.Response(status=204, headers={"X-Amz-Executed-Version": "$LATEST"})
    stream = ResponseStream()
    inv = Invocation(call.body, registry.loop.create_future(), source="invoke",
                     client_context=call.client_context, want_log=call.want_log, stream=stream)
    try:
        future = registry.intake.submit(call.pool, inv)
    except Unavailable as e:
        return unavailable(e)
    await stream.started()
    if not stream.begun and future.result().status == "throttled":
        return throttled(call.pool, inv.request_id)
    response = web.StreamResponse(headers={
        "X-Amz-Executed-Version": "$LATEST", "x-amzn-RequestId": inv.request_id,
        # ResponseStreamContentType: what the function streams (its whole answer is JSON).
        "Content-Type": stream.content_type or "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        while (chunk := await stream.read()) is not None:
            for message in eventstream.payload_chunks(chunk):
                await response.write(message)
        outcome = await future
        if not stream.begun and outcome.status == "success" and outcome.payload:
            for message in eventstream.payload_chunks(outcome.payload):
                await response.write(message)
        await response.write(completion(outcome))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the caller went away; the function runs on (and is billed) as on Lambda
    finally:
        stream.abandon()  # a caller that went away leaves the function streaming into nothing
    return response
