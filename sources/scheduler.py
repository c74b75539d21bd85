"""Schedule triggers: at each tick, an asynchronous event for the function, once per tick.

Each enabled schedule is one task that sleeps until its next fire time, computed from the
expression after the tick it fired (never by adding an interval, so it does not drift), then fires
the tick through the store: ``fire_tick`` stores the tick's event only if no node fired that tick
yet, so daemons that share a store and a config fire it once between them. The event then runs as
any asynchronous event does, with its retries and destinations. At start, ``catch_up = "latest"``
fires the last tick missed while no daemon ran.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from router.asyncq.runner import AsyncInvoker
from router.asyncq.store import NewEvent, StoreError
from router.config import Config, ScheduleTrigger, trigger_name
from router.metrics.instruments import Metrics
from sources import schedule
from sources.aws import backoff_s
from sources.cron import Schedule, next_fire, parse

log = logging.getLogger("headwater.schedule")
T = TypeVar("T")

LONGEST_SLEEP_S = 60.0  # a wall-clock step (NTP, a suspended VM) is noticed within this


class Entry(msgspec.Struct, frozen=True):
    name: str  # the tick's identity in the store
    function: str
    trigger: ScheduleTrigger
    schedule: Schedule
    arn: str


def entries(config: Config) -> list[Entry]:
    server = config.server
    out = []
    for fn in config.functions:
        for i, trigger in enumerate(fn.triggers):
            if isinstance(trigger, ScheduleTrigger) and trigger.enabled:
                name = trigger_name(fn, i)
                out.append(Entry(name, fn.name, trigger, parse(trigger.expression, trigger.timezone),
                                 schedule.rule_arn(server.region, server.account_id, name)))
    return out


def tick_event(entry: Entry, at: datetime, config: Config) -> NewEvent:
    """The tick's event: its id derived from the schedule and the time, the same on every node."""
    event = schedule.scheduled_event(entry.arn, at, account=config.server.account_id,
                                     region=config.server.region)
    payload = entry.trigger.input.encode() if entry.trigger.input else schedule.encode(event)
    return NewEvent(event.id, entry.function, payload, "schedule", at.timestamp(), time.time())


async def sleep_until(when: float) -> None:
    """Until the wall clock reads ``when``: slept in steps, so a step of the clock (NTP, a
    suspended machine) moves the wake-up with it."""
    delay = when - time.time()
    while delay > 0:
        await asyncio.sleep(min(delay, LONGEST_SLEEP_S))
        delay = when - time.time()


class Scheduler:
    def __init__(self, config: Config, invoker: AsyncInvoker, metrics: Metrics) -> None:
        self.config = config
        self.invoker = invoker
        self.metrics = metrics
        self.entries = entries(config)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(entry)) for entry in self.entries]

    async def _run(self, entry: Entry) -> None:
        await self.invoker.opened.wait()
        store = self.invoker.store
        now = datetime.now(UTC)
        last = await self._retrying(entry, lambda: store.last_tick(entry.name))
        last_at = None if last is None else datetime.fromtimestamp(last, UTC)
        missed = schedule.resume(entry.schedule, last_at, now, entry.trigger.catch_up)  # type: ignore[arg-type]  # checked by config
        if missed is not None:
            log.info("%s: firing the tick missed at %s", entry.name, schedule.event_time(missed))
            await self._fire(entry, missed)
        at = next_fire(entry.schedule, now)
        while at is not None:
            await sleep_until(at.timestamp())
            await self._fire(entry, at)
            at = next_fire(entry.schedule, at)

    async def _fire(self, entry: Entry, at: datetime) -> None:
        # A tick missed while no daemon ran (catch_up) shows its whole lateness too.
        self.metrics.source("schedule", entry.function).lag(time.time() - at.timestamp())
        event = tick_event(entry, at, self.config)
        store = self.invoker.store
        if await self._retrying(entry, lambda: store.fire_tick(entry.name, at.timestamp(), event)):
            self.invoker.wake()

    async def _retrying(self, entry: Entry, op: Callable[[], Awaitable[T]]) -> T:
        failures = 0
        while True:
            try:
                return await op()
            except StoreError as e:
                failures += 1
                self.metrics.source("schedule", entry.function).error()
                if failures == 1:
                    log.error("%s: the event store fails: %s (retrying)", entry.name, e)
                await asyncio.sleep(backoff_s(failures, random.random()))

    async def reload(self, config: Config) -> None:
        """Schedules as ``config`` has them (each resumes from the store's last fired tick, so a
        tick neither repeats nor is skipped for the restart)."""
        await self.close()
        self.config = config
        self.entries = entries(config)
        self.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
