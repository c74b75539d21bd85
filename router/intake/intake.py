"""The one way an event enters the run layer, for every source.

A source finds the function, builds an ``Invocation`` and calls ``submit``, which either refuses it
(``Unavailable``: the daemon is draining or cannot meter) or hands it to the function's pool and
returns the future of its ``Outcome``. Request sources (the Invoke API, HTTP triggers) answer a
throttle as their interface does; pollers (queues) first wait in ``room`` until the function can take
one more invocation without queueing behind its workers, so they stop receiving while it is busy
rather than being throttled or buffering messages without bound.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from router.intake.invocation import Invocation, Outcome

if TYPE_CHECKING:
    from router.run.pool import FunctionPool


class Unavailable(Exception):
    """New invocations are refused for now; the message says why (sources answer 503)."""


class Meter(Protocol):
    @property
    def failing(self) -> bool: ...


class Intake:
    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.draining = False

    def refusal(self) -> str | None:
        """Why new invocations are refused, if they are: none may start that could not be metered,
        and none once the daemon drains."""
        if self.draining:
            return "Headwater is shutting down"
        if self.meter.failing:
            return "Headwater cannot write metering records at the moment"
        return None

    def submit(self, pool: FunctionPool, inv: Invocation) -> asyncio.Future[Outcome]:
        """Queue ``inv`` on ``pool``; its outcome (a throttle included) is the returned future.
        Raises ``Unavailable``."""
        if (reason := self.refusal()) is not None:
            raise Unavailable(reason)
        pool.submit(inv)
        return inv.future

    async def room(self, pool: FunctionPool) -> Reservation | None:
        """Wait until ``pool`` can take an invocation at once or behind no more than one per worker,
        and hold that room until the returned reservation is released (at the poller's first
        submit, or when it received nothing); None once the daemon drains or the function goes
        (a poller then stops receiving)."""
        while not (self.draining or pool.closing or pool.has_room()):
            await pool.room_waiter()  # resolved when its queue shrinks, or when it closes
        if self.draining or pool.closing:
            return None
        return Reservation(pool)


class Reservation:
    __slots__ = ("pool",)

    def __init__(self, pool: FunctionPool) -> None:
        self.pool: FunctionPool | None = pool
        pool.reserved += 1

    def release(self) -> None:
        if self.pool is not None:
            self.pool.reserved -= 1
            if self.pool.has_room():
                self.pool.wake_room()
            self.pool = None
