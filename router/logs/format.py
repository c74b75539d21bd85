"""How every line on the daemon's stderr looks: the daemon's own records and what functions print.

This module is the one place that decides. ``decide`` picks text or JSON (``[server] log_format``
or ``--log-format``) and whether text lines carry a timestamp; ``install`` puts the daemon's
``logging`` on it; ``function_lines`` gives a function's log its formatter.

Text, by default: ``2026-12-03T07:40:00.123Z INFO headwater.pool: message`` for the daemon,
``2026-12-03T07:40:00.123Z [fn] START RequestId: …`` for Lambda's lines and
``2026-12-03T07:40:00.123Z [fn] REQUEST_ID<TAB>text`` for a function's output. Under systemd
(stderr is the stream named by ``JOURNAL_STREAM``) the timestamp is left out, since journald
stamps every line it receives, and the daemon's lines start with a ``<N>`` syslog priority,
which journald takes as the line's priority (``journalctl -p warning`` works); a function's line
starts with ``[``, so it can claim no priority.

JSON: one object a line, ``time``, ``level``, ``logger``, ``message``, and ``function`` and
``request_id`` on a function's lines (``logger`` is ``function`` for its output, ``platform`` for
START / END / REPORT and the errors Headwater reports for it).

What a function prints is untrusted: in text, control characters (ANSI escapes, carriage
returns, C1 controls) are written as ``\\xNN``, so no line can be moved, erased or recoloured on a
terminal, and every line starts with the function's tag, so none can pass for the daemon's; in
JSON, invalid UTF-8 becomes U+FFFD and the encoder escapes the rest, so each line stays one valid
object.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import typing
from collections.abc import Callable, Mapping

import msgspec

Kind = typing.Literal["text", "json"]

# C0 controls but tab and newline, DEL, and C1 controls as UTF-8 (U+0080-U+009F: 8-bit CSI and
# the like, which some terminals obey).
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
           logging.CRITICAL: 2}


class LogFormat(msgspec.Struct, frozen=True):
    kind: Kind = "text"
    stamped: bool = True  # text lines start with a timestamp (not under journald)
    journal: bool = False  # stderr is journald's: daemon lines carry a <N> priority


def under_journald(environ: Mapping[str, str], fd: int = 2) -> bool:
    """Whether ``fd`` is the journal stream systemd set up (``JOURNAL_STREAM=DEV:INODE``), as
    systemd.exec(5) says to check: a child whose stderr was redirected inherits the variable."""
    dev, _, ino = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


def decide(kind: str, environ: Mapping[str, str], fd: int = 2) -> LogFormat:
    """The format of ``[server] log_format`` (``--log-format``) on ``fd``."""
    journal = under_journald(environ, fd)
    return LogFormat("json" if kind == "json" else "text", stamped=not journal, journal=journal)


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class Clock:
    """ISO 8601 UTC timestamps with milliseconds. Every invocation asks for one, so the second's
    text is made once a second and the milliseconds' are looked up: a formatted float cost a
    third of the log's time per invocation."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def stamp(self, t: float) -> str:
        ms = int(t * 1000)
        second, millis = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._text + _MILLIS[millis]


def _escape(m: re.Match[bytes]) -> bytes:
    return b"".join(b"\\x%02x" % b for b in m[0])


def defang(data: bytes) -> bytes:
    """``data`` with its control characters (newlines and tabs aside) written as ``\\xNN``."""
    return _CONTROL.sub(_escape, data) if _CONTROL.search(data) else data


def defang_text(text: str) -> str:
    """The same for a message of the daemon's, newlines included: one record, one line."""
    if _CONTROL_TEXT.search(text) is None:
        return text
    return _CONTROL_TEXT.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


# --- a function's lines ------------------------------------------------------------------------


class Line(msgspec.Struct, omit_defaults=True):
    """One JSON log line; the API's log events have the same shape."""

    time: str
    level: str
    logger: str
    message: str
    function: str | None = None
    request_id: str | None = None


_encoder = msgspec.json.Encoder()
_encode, _encode_lines = _encoder.encode, _encoder.encode_lines  # encode_lines: each a line
BETWEEN = "-"  # the request id of output between invocations (a module's import, say)


def request_of(request_id: str) -> str | None:
    """A JSON line's request_id: none for output between invocations."""
    return None if request_id == BETWEEN else request_id


class TextLines:
    def __init__(self, function: str, stamped: bool, clock: Clock) -> None:
        self.tag = f"[{function}] "
        self.stamped = stamped
        self.clock = clock

    def _prefix(self, now: float) -> str:
        return f"{self.clock.stamp(now)} {self.tag}" if self.stamped else self.tag

    def output(self, now: float, request_id: str, lines: bytes) -> bytes:
        """What the function printed: whole lines, each ending in a newline."""
        tag = f"{self._prefix(now)}{request_id}\t".encode()
        lines = defang(lines)
        return tag + lines[:-1].replace(b"\n", b"\n" + tag) + b"\n"

    def platform(self, now: float, request_id: str, text: str, level: str = "INFO") -> bytes:
        """Headwater's lines about an invocation (START, END, REPORT, errors), each ending in a
        newline; they are its own, so nothing in them is escaped."""
        prefix = self._prefix(now)
        return (prefix + text[:-1].replace("\n", "\n" + prefix) + "\n").encode()


class JsonLines:
    def __init__(self, function: str, clock: Clock) -> None:
        self.function = function
        self.clock = clock

    def output(self, now: float, request_id: str, lines: bytes) -> bytes:
        stamp, fn, rid = self.clock.stamp(now), self.function, request_of(request_id)
        return _encode_lines([Line(stamp, "INFO", "function", line.decode(errors="replace"), fn, rid)
                              for line in lines[:-1].split(b"\n")])

    def platform(self, now: float, request_id: str, text: str, level: str = "INFO") -> bytes:
        stamp, fn = self.clock.stamp(now), self.function
        return _encode_lines([Line(stamp, level, "platform", line, fn, request_id)
                              for line in text[:-1].split("\n")])


LineFormat = TextLines | JsonLines


def function_lines(fmt: LogFormat, function: str, clock: Clock) -> LineFormat:
    if fmt.kind == "json":
        return JsonLines(function, clock)
    return TextLines(function, fmt.stamped, clock)


# --- the daemon's own records ------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    def __init__(self, fmt: LogFormat, clock: Clock) -> None:
        super().__init__()
        self.log_format = fmt
        self.clock = clock

    def format(self, record: logging.LogRecord) -> str:
        # A message may quote what a worker or a client sent (an error type, a path): escaped, it
        # cannot end the line and start one that looks like another record.
        text = f"{record.levelname} {record.name}: {defang_text(record.getMessage())}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.log_format.journal:
            return f"<{_SYSLOG.get(record.levelno, 6)}>{text}"
        return f"{self.clock.stamp(record.created)} {text}" if self.log_format.stamped else text


class JsonFormatter(logging.Formatter):
    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        line = Line(self.clock.stamp(record.created), record.levelname, record.name, message,
                    getattr(record, "function", None), getattr(record, "request_id", None))
        return _encode(line).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The daemon's records on stderr, each after the function line a short write of theirs may
    have left unfinished (``before``: the function logs' ``LogWriter.end_line``)."""

    before: Callable[[], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.before is not None:
            self.before()
        super().emit(record)


def share_stderr(end_line: Callable[[], None]) -> None:
    """Tell the daemon's handler (if ``install`` put one) how to finish a function's half
    written line before each record."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, StderrHandler):
            handler.before = end_line


def install(fmt: LogFormat, level: str, clock: Clock) -> None:
    """The daemon's ``logging`` on stderr in ``fmt``, from ``level`` up (the function's own lines
    are not filtered: they are its log, whatever the daemon's level)."""
    handler = StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(clock) if fmt.kind == "json" else TextFormatter(fmt, clock))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
