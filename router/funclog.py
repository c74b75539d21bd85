"""A function's log: Lambda's START / END / REPORT lines around the function's own output.

Every line goes to the daemon's log (stderr, so journald keeps it), prefixed with the function's name,
and the function's output lines with the request id as well. A caller that asked for the tail
(``X-Amz-Log-Type: Tail``) also gets the invocation's own log, unprefixed, as Lambda shows it.
"""

from __future__ import annotations

from router.invocation import Invocation, Outcome
from router.sink import BatchWriter

TAIL_BYTES = 4096


class FunctionLog:
    def __init__(self, writer: BatchWriter, function: str, memory_mb: int) -> None:
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
        if inv.log is not None:
            inv.log.append(data)
        if inv.partial:
            data = inv.partial + data
        cut = data.rfind(b"\n") + 1
        inv.partial = data[cut:]
        if cut:
            self._tag(inv.request_id.encode(), data[:cut])

    def _tag(self, request_id: bytes, lines: bytes) -> None:
        tag = self.prefix + request_id + b"\t"
        self.writer.write(tag + lines[:-1].replace(b"\n", b"\n" + tag) + b"\n")

    def end(self, inv: Invocation, outcome: Outcome, billed_ms: int) -> None:
        rid = inv.request_id
        if inv.partial:  # output that ended mid-line: END still starts a line
            self._tag(rid.encode(), inv.partial + b"\n")
            inv.partial = b""
            if inv.log is not None:
                inv.log.append(b"\n")
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
            inv.log.append(text.replace(p, "").encode())
            outcome.log = b"".join(inv.log)[-TAIL_BYTES:]

    def _emit(self, inv: Invocation, lines: bytes) -> None:
        self.writer.write(self.prefix + lines.replace(b"\n", b"\n" + self.prefix, lines.count(b"\n") - 1))
        if inv.log is not None:
            inv.log.append(lines)
