"""A function's log: Lambda's START / END / REPORT lines around the function's own output.

Every line goes to the daemon's log (stderr, so journald keeps it) in the daemon's log format
(``router.logs.format``: tagged with the function's name, and the function's output lines with the
request id as well), and to the function's ring of recent lines, which ``headwater logs`` reads. A
caller that asked for the tail (``X-Amz-Log-Type: Tail``) also gets the invocation's own log,
untagged, as Lambda shows it.

The function's output is bounded as it arrives: the tail keeps only its last 4 KB, and a line still
without its newline at ``LINE_BYTES`` (a CloudWatch Logs event's limit) is cut there and written as
a line of its own, so 32 MB without a newline cost one copy per byte, not one per read.
"""

from __future__ import annotations

import time

import msgspec

from router.intake.invocation import Invocation, Outcome
from router.logs.format import BETWEEN, Clock, LineFormat, LogFormat, function_lines
from router.logs.ring import LogRing, LogRings
from router.metering.sink import LogWriter

TAIL_BYTES = 4096
LINE_BYTES = 256 * 1024


def whole_lines(partial: bytearray, data: bytes, limit: int = LINE_BYTES) -> bytes:
    """Appends ``data`` to the unfinished line in ``partial`` and takes out what is now whole: each
    line up to its newline, a line of more than ``limit`` bytes (its newline aside) cut into lines
    of ``limit``, until ``partial`` holds at most ``limit`` bytes of an unfinished line.

    Each byte is copied into ``partial`` once and searched a bounded number of times, however small
    the pieces it arrives in (``partial`` holds no newline, so only ``data`` is searched for one).
    """
    partial += data
    last = partial.rfind(b"\n", len(partial) - len(data)) + 1
    pieces = []
    start = 0
    while start < last or len(partial) - start > limit:
        end = partial.rfind(b"\n", start, start + limit + 1) + 1
        if end:  # whole lines, none longer than the limit
            pieces.append(partial[start:end])
            start = end
        else:
            pieces.append(partial[start:start + limit] + b"\n")
            start += limit
    del partial[:start]
    return b"".join(pieces)


class FunctionLog:
    def __init__(self, writer: LogWriter, lines: LineFormat, ring: LogRing, memory_mb: int) -> None:
        self.writer = writer
        self.lines = lines
        self.ring = ring
        self.memory_mb = memory_mb

    # START is written lazily: before the function's first output, or with END and REPORT when it
    # printed nothing (the common case), so that most invocations cost one buffered write.

    def _start_line(self, inv: Invocation) -> str:
        inv.log_started = True
        return f"START RequestId: {inv.request_id} Version: $LATEST\n"

    def output(self, inv: Invocation | None, data: bytes) -> None:
        """The function's own bytes; ``inv`` is None for output between invocations.

        Lines are tagged whole: a line that arrives in pieces (``print`` writes its text and its
        newline separately) waits for its end, or for END, in ``inv.partial``.
        """
        if inv is None:
            self._output(BETWEEN, data if data.endswith(b"\n") else data + b"\n")
            return
        if not inv.log_started:
            self._platform(inv, self._start_line(inv))
        self._keep(inv, data)
        if inv.partial or not data.endswith(b"\n") or len(data) > LINE_BYTES:
            if inv.partial is None:
                inv.partial = bytearray()
            data = whole_lines(inv.partial, data)
            if not data:
                return
        self._output(inv.request_id, data)

    @staticmethod
    def _keep(inv: Invocation, data: bytes) -> None:
        """Add to the caller's tail, if it asked for one, keeping only its last 4 KB."""
        log = inv.log
        if log is not None:
            log += data[-TAIL_BYTES:]
            if len(log) > TAIL_BYTES:
                del log[:-TAIL_BYTES]  # a bytearray drops its front without moving the rest

    def _output(self, request_id: str, lines: bytes) -> None:
        now = time.time()
        self.ring.add(now, request_id, "INFO", "function", lines)
        self.writer.write_output(self.lines.output(now, request_id, lines))

    def _platform(self, inv: Invocation, text: str, level: str = "INFO") -> None:
        now = time.time()
        data = text.encode()
        self.ring.add(now, inv.request_id, level, "platform", data)
        self.writer.write(self.lines.platform(now, inv.request_id, text, level))
        self._keep(inv, data)

    def end(self, inv: Invocation, outcome: Outcome, billed_ms: int) -> None:
        rid = inv.request_id
        if inv.partial:  # output that ended mid-line: END still starts a line
            self._output(rid, bytes(inv.partial) + b"\n")
            self._keep(inv, b"\n")
        extra = ""
        if outcome.init_duration_ms is not None:
            extra = f"\tInit Duration: {outcome.init_duration_ms:.2f} ms"
        if outcome.status in ("timeout", "crash", "oom"):
            # Found by Headwater, not reported by the function: said in its log, as Lambda does.
            extra += ("\tStatus: timeout" if outcome.status == "timeout"
                      else f"\tStatus: error\tError Type: {outcome.error_type}")
            if not inv.log_started:
                self._platform(inv, self._start_line(inv))
            self._platform(inv, f"{error_message(outcome.payload)}\n", "ERROR")
        # Formatted in one string, and written and kept once: this runs for every invocation.
        start = "" if inv.log_started else self._start_line(inv)
        self._platform(inv, f"{start}END RequestId: {rid}\nREPORT RequestId: {rid}"
                       f"\tDuration: {outcome.duration_ms:.2f} ms\tBilled Duration: {billed_ms} ms"
                       f"\tMemory Size: {self.memory_mb} MB\tMax Memory Used: "
                       f"{outcome.max_memory_mb} MB{extra}\n")
        if inv.log is not None:  # the caller's tail
            outcome.log = bytes(inv.log)


def error_message(payload: bytes) -> str:
    """The errorMessage of an error object Headwater made (``RequestId: … Error: …``)."""
    try:
        message = msgspec.json.decode(payload).get("errorMessage")
    except (msgspec.DecodeError, AttributeError):
        message = None
    return str(message) if message else "Error: the invocation failed"


class FunctionLogs:
    """What the logs of every function share: the daemon's stderr, its format, and the rings."""

    def __init__(self, writer: LogWriter, fmt: LogFormat, rings: LogRings) -> None:
        self.writer = writer
        self.format = fmt
        self.rings = rings
        self.clock = Clock()

    def of(self, function: str, memory_mb: int) -> FunctionLog:
        return FunctionLog(self.writer, function_lines(self.format, function, self.clock),
                           self.rings.get(function), memory_mb)
