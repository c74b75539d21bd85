"""One metering record per invocation attempt, as JSON lines (see the README for the fields)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import msgspec

from router.config import MeteringConfig
from router.intake.invocation import Invocation, Outcome, Status
from router.metering.sink import RotatingFile


class Record(msgspec.Struct):
    request_id: str
    function: str
    version: str
    source: str
    source_arn: str | None  # the queue or bucket an event came from (sqs, s3)
    invocation_type: str
    attempt: int  # 1, or an asynchronous event's retry: 2, 3, … under the same request_id
    start: str  # ISO 8601 UTC, microseconds: 2026-11-27T02:31:05.160406Z
    end: str
    duration_ms: float
    billed_duration_ms: int
    memory_mb: int
    max_memory_used_mb: int
    init_duration_ms: float | None
    cold: bool
    outcome: Status
    error_type: str | None
    worker_pid: int | None
    cost_usd: float


class _Clock:
    """Formats epoch seconds as ISO 8601 UTC, reusing the text of the last whole second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, t: float) -> str:
        second, micros = divmod(round(t * 1e6), 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{micros:06d}Z"


def billed_ms(duration_ms: float) -> int:
    """Lambda bills in whole milliseconds, rounded up (a throttle runs nothing and bills nothing),
    from the duration as the record shows it (to the microsecond), so the two always agree."""
    return math.ceil(round(duration_ms, 3))


def cost_usd(memory_mb: int, billed: int, status: Status, config: MeteringConfig) -> float:
    if status == "throttled":
        return 0.0
    return memory_mb / 1024 * billed / 1000 * config.price_per_gb_second + config.price_per_request


class Meter:
    """Builds records and appends them to the metering file in batches."""

    def __init__(self, config: MeteringConfig) -> None:
        self.config = config
        self.file = RotatingFile(config.path, config.rotate_bytes, config.backups,
                                 config.buffer_bytes, config.rotate_daily)
        self._encoder = msgspec.json.Encoder()
        self._clock = _Clock()

    def record(self, function: str, memory_mb: int, inv: Invocation, outcome: Outcome,
               billed: int, end: float) -> None:
        # Positional, in the field order above: keywords cost a Struct several times as much.
        record = Record(
            inv.request_id, function, "$LATEST", inv.source, inv.source_arn, inv.invocation_type,
            inv.attempt,
            self._clock.iso(end - outcome.duration_ms / 1000), self._clock.iso(end),
            round(outcome.duration_ms, 3), billed, memory_mb, outcome.max_memory_mb,
            outcome.init_duration_ms, inv.cold, outcome.status, outcome.error_type,
            outcome.worker_pid, cost_usd(memory_mb, billed, outcome.status, self.config))
        self.file.write(self._encoder.encode(record) + b"\n")

    @property
    def failing(self) -> bool:
        """Whether records cannot be written at the moment (they wait in memory)."""
        return self.file.failing is not None

    def check(self) -> None:
        self.file.check()

    def close(self) -> None:
        self.file.close()
