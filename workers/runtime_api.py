"""A worker that speaks the Lambda Runtime API, served by the router to that worker alone.

A custom runtime (``provided*``: the package's ``bootstrap``, awslambdaric, a shell loop around
curl) or the Node.js client asks for work with ``GET /2018-06-01/runtime/invocation/next`` and
answers on ``…/invocation/{id}/response`` or ``…/error``; an import that fails is reported on
``/runtime/init/error``. A response posted with ``Lambda-Runtime-Function-Response-Mode: streaming``
(chunked) is passed on chunk by chunk as it arrives (``StreamedResponse``); an error in the middle
of it comes in the trailers ``Lambda-Runtime-Function-Error-Type`` and
``Lambda-Runtime-Function-Error-Body`` (base64).

Its fork server makes the listening socket inside the sandbox's network namespace before it
execs the worker, names it in ``AWS_LAMBDA_RUNTIME_API``, and hands it to the router with the
worker's pipes, so the endpoint is one the worker can reach and the host's other processes cannot
(another worker of the same function could: the function is the sandbox's unit).

To the pool this is a ``Worker`` like any other: ``invoke`` hands over an invocation, and the
result, the init error, readiness (its first ``/next``) and its exit reach the same ``Listener``.
Like the frames, what the worker sends is checked against its state: a response for an id not in
flight is refused (400), a second one for the same id too (403), one over the response limit is
refused (413) and ends the invocation as Lambda's ``Function.ResponseSizeTooLarge``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import signal
import socket
import time

import msgspec

from workers import protocol
from workers.http1 import Connection, Request
from workers.process import EXIT_REPORT_S, Listener, Worker
from workers.protocol import Invoke, Result

log = logging.getLogger("headwater.runtime_api")

PREFIX = "/2018-06-01/runtime"
STREAM_CONTENT_TYPE = "application/octet-stream"  # a streamed response's type unless it names one
STOP_GRACE_S = 2.0  # Lambda's shutdown phase gives a runtime 2 s after SIGTERM


OK = b'{"status":"OK"}'


def api_error(connection: Connection, status: int, error_type: str, message: str,
              close: bool = False) -> None:
    connection.respond(status, json.dumps({"errorMessage": message, "errorType": error_type}).encode(),
                       close=close)


def invocation_headers(message: Invoke) -> dict[str, str]:
    """The headers of a ``/next`` answer, as Lambda sends them (empty ones left out)."""
    headers = {"Lambda-Runtime-Aws-Request-Id": message.request_id,
               "Lambda-Runtime-Deadline-Ms": str(message.deadline_ms),
               "Lambda-Runtime-Invoked-Function-Arn": message.arn}
    if message.trace_id:
        headers["Lambda-Runtime-Trace-Id"] = message.trace_id
    if message.client_context is not None:
        headers["Lambda-Runtime-Client-Context"] = bytes(message.client_context).decode()
    return headers


def error_type_of(header: str | None, body: bytes) -> str:
    """The error's type: the runtime's header, else the body's ``errorType``, else Lambda's
    default for a runtime that says nothing."""
    if header:
        return header
    with contextlib.suppress(ValueError, AttributeError):
        found = json.loads(body).get("errorType")
        if isinstance(found, str) and found:
            return found
    return "Runtime.Unknown"


def error_payload(error_type: str, body: bytes) -> bytes:
    """The error object a caller gets: the runtime's own if it is one, else one made for it."""
    with contextlib.suppress(ValueError):
        if isinstance(json.loads(body), dict):
            return body
    return json.dumps({"errorMessage": body.decode(errors="replace")[:4096],
                       "errorType": error_type}).encode()


def trailer_error(trailers: dict[str, str]) -> tuple[str | None, bytes] | None:
    """The error a streamed response ended with, from its trailers: the type they name, and the
    body, as a posted error's header and body would be."""
    error_type = trailers.get("lambda-runtime-function-error-type")
    encoded = trailers.get("lambda-runtime-function-error-body")
    if not error_type and encoded is None:
        return None
    try:
        return error_type, base64.b64decode(encoded or "", validate=True)
    except binascii.Error:
        return error_type, (encoded or "").encode()


class StreamedResponse:
    """The body of one streamed ``/response``, as the worker's connection reads it."""

    __slots__ = ("worker", "connection", "request_id", "limit", "size")

    def __init__(self, worker: ApiWorker, connection: Connection, request_id: str, limit: int) -> None:
        self.worker = worker
        self.connection = connection
        self.request_id = request_id
        self.limit = limit
        self.size = 0

    def _current(self) -> bool:
        current = self.worker._current
        return current is not None and current.request_id == self.request_id

    def chunk(self, data: bytes) -> None:
        if not self._current():
            return
        self.size += len(data)
        if self.size > self.limit:
            self.worker._fail_current("Function.ResponseSizeTooLarge",
                                      f"Response payload size exceeded maximum allowed payload size "
                                      f"({self.limit} bytes).")
            api_error(self.connection, 413, "RequestEntityTooLarge",
                      f"a streamed response may be at most {self.limit} bytes", close=True)
        elif not self.worker.listener.worker_chunk(self.worker, data):
            self.connection.pause()  # the caller is behind: the worker waits in its write

    def end(self, trailers: dict[str, str]) -> None:
        if not self._current():
            api_error(self.connection, 403, "InvalidStateTransition",
                      f"invocation {self.request_id} has ended already")
            return
        failed = trailer_error(trailers)
        if failed is None:
            self.worker._complete(self.connection, True, b"")
        else:
            self.worker._complete(self.connection, False, failed[1], failed[0])

    def lost(self) -> None:
        # Most often the worker is dying (killed at its deadline, or crashed), and its exit is what
        # ends the invocation; a runtime that lives on without finishing is given the same moment.
        self.worker._loop.call_later(EXIT_REPORT_S, self._truncated)

    def _truncated(self) -> None:
        if self._current() and self.worker.state == "busy":
            self.worker._fail_current("Runtime.TruncatedResponse",
                                      "the runtime closed its connection before the end of its "
                                      "streamed response")


class ApiWorker(Worker):
    __slots__ = ("_server", "_waiting", "_queued", "_current", "_answered")

    def __init__(self, listener: Listener, tag: object = None) -> None:
        super().__init__(listener, tag)
        self._server: asyncio.Server | None = None
        self._waiting: Connection | None = None  # a /next waiting for an invocation
        self._queued: Invoke | None = None  # handed over, not fetched yet
        self._current: Invoke | None = None  # fetched, not answered yet
        self._answered = ""  # the last id answered: a second answer is refused as such

    def attach(self, pidfd: int, pid: int, fds: tuple[int, ...], init_deadline: float) -> None:
        to_worker, from_worker, log_fd, listening = fds
        os.close(to_worker)  # a Runtime API worker is talked to over HTTP, not frames
        os.close(from_worker)
        self._take(pidfd, pid, log_fd, init_deadline)
        sock = socket.socket(fileno=listening)
        # Its fork server runs in the function's sandbox: what it handed over is checked.
        if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM or \
                not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            sock.close()
            log.warning("worker %d: its fork server sent no listening socket: killed", pid)
            self.kill("protocol")
            return
        sock.setblocking(False)
        task = asyncio.ensure_future(self._loop.create_server(
            lambda: Connection(self._handle, protocol.MAX_RESPONSE, self._streamer), sock=sock))
        task.add_done_callback(self._serving)

    def _serving(self, task: asyncio.Future[asyncio.Server]) -> None:
        if task.cancelled() or task.exception() is not None:
            self.kill("protocol")
            return
        self._server = task.result()
        if self.state == "dead":
            self._server.close()

    # --- the router's side -----------------------------------------------------------------

    def invoke(self, job: object, message: Invoke, deadline: float) -> None:
        self.state = "busy"
        self.job = job
        self.deadline = deadline
        self.invocations += 1
        self._queued = message
        waiting, self._waiting = self._waiting, None
        if waiting is not None and waiting.open:
            self._deliver(waiting)

    def stop(self) -> None:
        """SIGTERM, as Lambda ends a runtime, then SIGKILL after the shutdown phase."""
        if self.state in ("stopping", "dead"):
            return
        self.state = "stopping"
        self._close_server()
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGTERM)
        self._loop.call_later(STOP_GRACE_S, self.kill)

    def exited(self, returncode: int) -> None:
        self._close_server()
        self._waiting = None
        super().exited(returncode)

    def _close_server(self) -> None:
        if self._server is not None:
            self._server.close()

    # --- the worker's side -----------------------------------------------------------------

    def _handle(self, connection: Connection, request: Request) -> None:
        method, path = request.method, request.path
        route = path[len(PREFIX):].split("/") if path.startswith(PREFIX) else []
        if method == "GET" and route == ["", "invocation", "next"]:
            self._next(connection)
        elif method == "POST" and route == ["", "init", "error"]:
            self._init_error(connection, request)
        elif method == "POST" and len(route) == 4 and route[1] == "invocation" and \
                route[3] in ("response", "error"):
            self._answer(connection, request, route[2], route[3] == "response")
        else:
            api_error(connection, 404, "InvalidRequest", f"no such operation: {method} {path}")

    def _streamer(self, connection: Connection, method: str, path: str,
                  headers: dict[str, str]) -> StreamedResponse | None:
        """A streamed answer to the invocation in flight; any other chunked body is read whole
        (and answered by ``_answer``)."""
        current = self._current
        if method != "POST" or current is None or self.state != "busy" or \
                headers.get("lambda-runtime-function-response-mode", "").lower() != "streaming" or \
                path != f"{PREFIX}/invocation/{current.request_id}/response":
            return None
        limit = self.listener.worker_stream(self, headers.get("content-type", STREAM_CONTENT_TYPE),
                                            connection.resume)
        return StreamedResponse(self, connection, current.request_id, limit)

    def _next(self, connection: Connection) -> None:
        if self.state == "starting":  # its init is done once it asks for work
            if self.limits is None or self.limits.done():
                self._ready()
            else:
                self.limits.add_done_callback(lambda _: self._ready())
        if self._current is not None:
            # Asking again without answering: Lambda ends such an invocation as the runtime's error.
            self._fail_current("Runtime.InvalidStateTransition",
                               "the runtime asked for the next invocation without answering")
        if self.state in ("stopping", "dead"):
            api_error(connection, 500, "Runtime.Stopping", "the worker is stopping")
        elif self._queued is not None:
            self._deliver(connection)
        else:
            self._waiting = connection  # answered when an invocation comes (long poll)

    def _deliver(self, connection: Connection) -> None:
        message, self._queued = self._queued, None
        assert message is not None
        self._current = message
        connection.respond(200, bytes(message.payload), invocation_headers(message))

    def _answer(self, connection: Connection, request: Request, request_id: str, ok: bool) -> None:
        current = self._current
        if current is None or current.request_id != request_id:
            if request_id == self._answered:
                api_error(connection, 403, "InvalidStateTransition",
                          f"invocation {request_id} has been answered already")
            else:
                api_error(connection, 400, "InvalidRequestID", f"no invocation {request_id} is in flight")
            return
        body = request.body
        if body is None:
            self._fail_current("Function.ResponseSizeTooLarge",
                               f"Response payload size exceeded maximum allowed payload size "
                               f"({protocol.MAX_RESPONSE} bytes).")
            api_error(connection, 413, "RequestEntityTooLarge",
                      f"a response may be at most {protocol.MAX_RESPONSE} bytes")
            return
        self._complete(connection, ok, body, request.headers.get("lambda-runtime-function-error-type"))

    def _complete(self, connection: Connection, ok: bool, body: bytes,
                  header_type: str | None = None) -> None:
        """The invocation answered, whole or streamed: ``body`` its response or, not ``ok``, the
        error the runtime sent, of the type ``header_type`` names; the runtime gets its 202."""
        if ok:
            result = Result(ok=True, error_type=None, max_memory_mb=self.peak_mb(),
                            output_pending=False, payload=msgspec.Raw(body))
        else:
            error_type = error_type_of(header_type, body)
            result = Result(ok=False, error_type=error_type, max_memory_mb=self.peak_mb(),
                            output_pending=False, payload=msgspec.Raw(error_payload(error_type, body)))
        connection.respond(202, OK)
        self._finish(result)

    def _fail_current(self, error_type: str, message: str) -> None:
        body = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
        self._finish(Result(ok=False, error_type=error_type, max_memory_mb=self.peak_mb(),
                            output_pending=False, payload=msgspec.Raw(body)))

    def _finish(self, result: Result) -> None:
        assert self._current is not None
        self._answered = self._current.request_id
        self._current = None
        if self.state == "busy":
            self.drain_output()  # its log lines before the invocation's END
            self.state = "idle"
            self.listener.worker_result(self, result)

    def _init_error(self, connection: Connection, request: Request) -> None:
        if self.state != "starting":
            api_error(connection, 403, "InvalidStateTransition", "init has ended already")
            return
        body = request.body or b""
        error_type = error_type_of(request.headers.get("lambda-runtime-function-error-type"), body)
        connection.respond(202, OK)
        self.drain_output()
        self.init_duration_ms = (time.monotonic() - self.spawned) * 1000
        self.state = "stopping"
        self.listener.worker_init_failed(self, error_type, error_payload(error_type, body))
