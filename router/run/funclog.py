"""A function's log: Lambda's START / END / REPORT lines around the function's own output.

Every line goes to the daemon's log (stderr, so journald keeps it), prefixed with the function's name,
and the function's output lines with the request id as well. A caller that asked for the tail
(``X-Amz-Log-Type: Tail``) also gets the invocation's own log, unprefixed, as Lambda shows it.

The function's output is bounded as it arrives: the tail keeps only its last 4 KB, and a line still
without its newline at ``LINE_BYTES`` (a CloudWatch Logs event's limit) is cut there and written as
a line of its own, so 32 MB without a newline cost one copy per byte, not one per read.
"""

from __future__ import annotations

from router.intake.invocation import Invocation, Outcome
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
    def __init__(self, writer: LogWriter, function: str, memory_mb: int) -> None:
        self.writer = writer
        self.prefix_text = f"[{function}] "
        self.prefix = self.prefix_text.encode()
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
            self._tag(b"-", data if data.endswith(b"\n") else data + b"\n")
            return
        if not inv.log_started:
            self._emit(inv, self._start_line(inv).encode())
        self._keep(inv, data)
        if inv.partial or not data.endswith(b"\n") or len(data) > LINE_BYTES:
            if inv.partial is None:
                inv.partial = bytearray()
            data = whole_lines(inv.partial, data)
            if not data:
                return
        self._tag(inv.request_id.encode(), data)

    @staticmethod
    def _keep(inv: Invocation, data: bytes) -> None:
        """Add to the caller's tail, if it asked for one, keeping only its last 4 KB."""
        log = inv.log
        if log is not None:
            log += data[-TAIL_BYTES:]
            if len(log) > TAIL_BYTES:
                del log[:-TAIL_BYTES]  # a bytearray drops its front without moving the rest

    def _tag(self, request_id: bytes, lines: bytes) -> None:
        tag = self.prefix + request_id + b"\t"
        self.writer.write_output(tag + lines[:-1].replace(b"\n", b"\n" + tag) + b"\n")

    def end(self, inv: Invocation, outcome: Outcome, billed_ms: int) -> None:
        rid = inv.request_id
        if inv.partial:  # output that ended mid-line: END still starts a line
            self._tag(rid.encode(), bytes(inv.partial) + b"\n")
            self._keep(inv, b"\n")
        extra = ""
        if outcome.init_duration_ms is not None:
            extra = f"\tInit Duration: {outcome.init_duration_ms:.2f} ms"
        if outcome.status == "timeout":
            extra += "\tStatus: timeout"
        # Formatted with the prefix in place, in one string: this runs for every invocation.
        p = self.prefix_text
        start = "" if inv.log_started else p + self._start_line(inv)
        text = (f"{start}{p}END RequestId: {rid}\n{p}REPORT RequestId: {rid}"
                f"\tDuration: {outcome.duration_ms:.2f} ms\tBilled Duration: {billed_ms} ms"
                f"\tMemory Size: {self.memory_mb} MB\tMax Memory Used: {outcome.max_memory_mb} MB"
                f"{extra}\n")
        self.writer.write(text.encode())
        if inv.log is not None:  # the caller's tail: the same lines, without the prefix
            self._keep(inv, text.replace(p, "").encode())
            outcome.log = bytes(inv.log)

    def _emit(self, inv: Invocation, lines: bytes) -> None:
        self.writer.write(self.prefix + lines.replace(b"\n", b"\n" + self.prefix, lines.count(b"\n") - 1))
        self._keep(inv, lines)
