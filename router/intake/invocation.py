"""What travels through the router: an ``Invocation`` in, an ``Outcome`` out."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Literal

import msgspec

from router.intake.stream import ResponseStream

MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # 6,291,456 bytes: Lambda's limit on a synchronous request
Status = Literal["success", "error", "timeout", "crash", "oom", "throttled"]


def new_request_id() -> str:
    """A random (version 4) UUID in text form, as Lambda's request ids are.

    From ``random`` rather than ``uuid.uuid4``: the latter's ``getrandom`` system call is a
    measurable share of an invocation, and a request id needs to be unique, not unguessable.
    """
    h = "%032x" % (random.getrandbits(128) & _V4_CLEAR | _V4_SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_V4_CLEAR = ~(0xF000 << 64 | 0xC000 << 48)  # the version nibble and the variant bits
_V4_SET = 0x4000 << 64 | 0x8000 << 48


class Outcome(msgspec.Struct):
    status: Status
    payload: bytes  # the result's JSON, or Lambda's error object when status is not "success"
    error_type: str | None = None
    duration_ms: float = 0.0
    max_memory_mb: int = 0
    init_duration_ms: float | None = None
    worker_pid: int | None = None
    log: bytes | None = None  # the invocation's log, when the caller asked for it

    @property
    def function_error(self) -> bool:
        return self.status not in ("success", "throttled")


class Invocation:
    """One event on its way to a worker; ``future`` resolves to its ``Outcome``."""

    __slots__ = ("request_id", "payload", "invocation_type", "source", "source_arn", "client_context",
                 "want_log", "future", "received", "started", "log", "cold", "log_started", "partial",
                 "attempt", "stream")

    def __init__(self, payload: bytes, future: asyncio.Future[Outcome], *, source: str,
                 invocation_type: str = "RequestResponse", client_context: bytes | None = None,
                 want_log: bool = False, request_id: str | None = None,
                 source_arn: str | None = None, attempt: int = 1,
                 stream: ResponseStream | None = None) -> None:
        self.request_id = request_id or new_request_id()
        self.payload = payload
        self.invocation_type = invocation_type
        self.source = source
        self.source_arn = source_arn  # the queue's or bucket's ARN, for an event from one
        self.attempt = attempt  # an asynchronous event's tries so far, this one included
        self.client_context = client_context
        self.want_log = want_log
        self.future = future
        self.received = time.time()
        self.started = 0.0  # monotonic, set when a worker takes it
        self.log: bytearray | None = bytearray() if want_log else None  # its last 4 KB
        self.cold = False
        self.log_started = False
        # The function's output since its last newline; made when first needed, since most
        # invocations print nothing or whole lines.
        self.partial: bytearray | None = None
        # Where a response the function streams goes as it comes (a caller that reads it so), or,
        # set by the pool when the function streams to a caller that does not, where it is collected.
        self.stream = stream
