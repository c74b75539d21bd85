"""The scaling policy: a pure function from a pool's state to what to start and what to stop.

No I/O and no clock: the caller passes ``now``, so the policy is tested with tables and a fake clock,
and the pool only applies the ``Decision``.
"""

from __future__ import annotations

import msgspec


class Snapshot(msgspec.Struct, frozen=True):
    queued: int  # invocations waiting for a worker
    busy: int
    starting: int
    idle_since: tuple[float, ...]  # when each idle worker became idle, oldest first
    min_workers: int
    max_workers: int
    keep_warm_s: float
    now: float


class Decision(msgspec.Struct, frozen=True):
    start: int = 0
    stop: tuple[int, ...] = ()  # indexes into ``Snapshot.idle_since``


def plan(s: Snapshot) -> Decision:
    idle = len(s.idle_since)
    live = s.busy + s.starting + idle
    room = max(0, s.max_workers - live)
    # Every queued invocation that no starting worker will take asks for one more worker;
    # the floor (provisioned concurrency) asks for the rest.
    wanted = max(s.queued - s.starting - idle, s.min_workers - live, 0)
    start = min(wanted, room)
    # Scale in: the longest-idle workers above the floor, once they have been idle long enough.
    spare = live - max(s.min_workers, 0) if s.queued == 0 else 0
    stop = tuple(i for i, since in enumerate(s.idle_since) if s.now - since >= s.keep_warm_s)
    return Decision(start=start, stop=stop[:max(0, min(spare, idle))])
