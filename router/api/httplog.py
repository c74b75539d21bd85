"""What the HTTP server logs about requests it could not parse: one short line each, rate-limited.

aiohttp logs a malformed request (a bad request line, a broken header, a truncated chunk) with
its whole traceback, about 1.8 KB a request, which anyone can send by the thousand. Here such a
request is one line of at most ``MAX_TEXT`` characters, and at most ``BURST`` lines are written in
any ``PERIOD_S``, with a count of those left out. Anything else aiohttp reports (an exception in a
handler: a bug) keeps its traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

log = logging.getLogger("headwater.http")

MAX_TEXT = 160
PERIOD_S = 10.0
BURST = 10


class RateLimit:
    """At most ``burst`` events per ``period_s``, counting those refused."""

    def __init__(self, burst: int = BURST, period_s: float = PERIOD_S) -> None:
        self.burst = burst
        self.period_s = period_s
        self.window_start = float("-inf")
        self.used = 0
        self.suppressed = 0

    def allow(self, now: float) -> tuple[bool, int]:
        """Whether an event at ``now`` may pass, and how many were refused since the last that
        did (to report with it)."""
        if now - self.window_start >= self.period_s:
            self.window_start, self.used = now, 0
        if self.used >= self.burst:
            self.suppressed += 1
            return False, 0
        self.used += 1
        suppressed, self.suppressed = self.suppressed, 0
        return True, suppressed


def short(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` on one line, non-printable characters escaped, cut at ``limit`` characters."""
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)
    return shown if len(shown) <= limit else shown[:limit - 1] + "…"


# What a malformed request raises: the parser's errors, and a body that fails to decode (a broken
# gzip stream, a bad chunk), which surfaces even while aiohttp discards a body no one read.
MALFORMED = (HttpProcessingError, RequestPayloadError)


def describe(error: BaseException) -> str:
    return " ".join(str(error).split())


class RequestErrors(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The ``logger`` of aiohttp's server: malformed requests become short, rate-limited lines."""

    def __init__(self, logger: logging.Logger = log, limit: RateLimit | None = None) -> None:
        super().__init__(logger, {})
        self.limit = limit or RateLimit()

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if not isinstance(exc_info, MALFORMED):
            self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        allowed, suppressed = self.limit.allow(time.monotonic())
        if not allowed:
            return
        peer = args[0] if args else "?"
        more = f" ({suppressed} more not logged)" if suppressed else ""
        self.logger.warning("malformed request from %s: %s%s", peer, short(describe(exc_info)), more)
