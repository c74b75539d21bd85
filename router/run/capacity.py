"""The daemon's worker cap (``[server].max_workers``), shared fairly between functions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from router.run.scaling import fair_shares

if TYPE_CHECKING:
    from router.run.pool import FunctionPool


class Capacity:
    """Counts live workers across every function; when the cap binds, each function's cap is its
    max-min fair share of it, so a flood on one function cannot starve the others."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0
        self.pools: list[FunctionPool] = []

    @property
    def saturated(self) -> bool:
        return self.live >= self.limit

    def room(self) -> int:
        return max(0, self.limit - self.live)

    def cap(self, pool: FunctionPool) -> int:
        """The most workers ``pool`` may have now."""
        own = pool.config.max_workers
        demand = {p: p.demand() for p in self.pools}
        if sum(demand.values()) <= self.limit:
            return own
        return min(own, fair_shares(demand, self.limit)[pool])

    def started(self) -> None:
        self.live += 1

    def released(self, pool: FunctionPool) -> None:
        """A worker of ``pool`` is gone: functions waiting for capacity may start one."""
        self.live -= 1
        now = time.monotonic()
        for other in self.pools:
            if other is not pool and other.queue:
                other.scale(now)
