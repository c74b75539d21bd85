"""The scaling policy: a pure function from a pool's state to what to start and what to stop.

No I/O and no clock: the caller passes ``now``, so the policy is tested with tables and a fake clock,
and the pool only applies the ``Decision``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

import msgspec

K = TypeVar("K", bound=Hashable)  # whatever names a function: the pool itself, in the daemon


class Snapshot(msgspec.Struct, frozen=True):
    queued: int  # invocations waiting for a worker
    busy: int
    starting: int
    idle_since: tuple[float, ...]  # when each idle worker became idle, oldest first
    min_workers: int
    max_workers: int
    keep_warm_s: float
    now: float
    global_room: int = 1 << 30  # workers the daemon as a whole may still start


class Decision(msgspec.Struct, frozen=True):
    start: int = 0
    stop: tuple[int, ...] = ()  # indexes into ``Snapshot.idle_since``


def plan(s: Snapshot) -> Decision:
    """``max_workers`` is the function's cap as it stands now: its own, or its fair share of the
    daemon's when that is smaller (see ``fair_shares``)."""
    idle = len(s.idle_since)
    live = s.busy + s.starting + idle
    room = max(0, min(s.max_workers - live, s.global_room))
    # Every queued invocation that no starting worker will take asks for one more worker;
    # the floor (provisioned concurrency) asks for the rest.
    wanted = max(s.queued - s.starting - idle, s.min_workers - live, 0)
    start = min(wanted, room)
    # Over the cap (a fair share that shrank): idle workers go at once, the longest idle first.
    over = min(idle, max(0, live - max(s.max_workers, s.min_workers)))
    # Scale in: workers above the floor that have been idle for keep_warm_s.
    spare = (live - over - s.min_workers) if s.queued == 0 else 0
    aged = [i for i in range(over, idle) if s.now - s.idle_since[i] >= s.keep_warm_s]
    return Decision(start=start, stop=(*range(over), *aged[:max(0, spare)]))


def fair_shares(demand: dict[K, int], capacity: int) -> dict[K, int]:
    """Split ``capacity`` workers max-min fairly between functions wanting ``demand`` each.

    A function that wants less than an equal share gets what it wants; the rest is split evenly
    between the others (water-filling), so a flood on one function cannot take every worker.
    """
    shares = dict.fromkeys(demand, 0)
    left = capacity
    order = sorted(demand, key=lambda name: demand[name])
    for i, name in enumerate(order):
        shares[name] = min(demand[name], left // (len(order) - i))
        left -= shares[name]
    for name in reversed(order):  # what integer division left over, to the largest demands
        if left == 0:
            break
        if shares[name] < demand[name]:
            shares[name] += 1
            left -= 1
    return shares
