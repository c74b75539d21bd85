"""Asynchronous invocation on this node: accept an event into the durable store, claim due events,
run each through the intake, and settle it as Lambda's retry policy says.

An Event invoke is answered 202 only once ``accept`` returned, that is once the store has it on
disk (or in PostgreSQL). From then on the event leaves the store only in a settlement that writes
its successor in the same step: a retry of itself, a destination's event, a dead letter. A node
renews the leases of the events it runs, so an event outlives its node: when the node dies, its
leases lapse and any node claims the event again (at least once; a duplicate is possible, silence
is not).

Claims are bounded by ``[async] max_in_flight``; each claimed event then waits in the intake for
room in its function's queue, as a queue poller does, so a backlog of events never becomes a
backlog of invocations in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.asyncq.record import Response, destination_record
from router.asyncq.retry import Condition, Finish, Kind, RetryPolicy, decide, kind_of, too_old
from router.asyncq.store import Backlog, Claim, NewEvent, StoreError, open_store
from router.config import AsyncInvoke, Config, function_arn
from router.intake.intake import Intake, Unavailable
from router.intake.invocation import Invocation, new_request_id
from router.metrics.instruments import Metrics
from sources.aws import Clients, backoff_s
from sources.sqs_event import queue_url_of

if TYPE_CHECKING:
    from router.run.pool import FunctionPool

log = logging.getLogger("headwater.async")

MAX_ASYNC_PAYLOAD = 1024 * 1024  # 1,048,576 bytes: Lambda's limit on an asynchronous request
CLAIM_BATCH = 64
BACKLOG_EVERY_S = 2.0  # how stale /metrics' backlog figures may be


def policy_of(fn: AsyncInvoke, config: Config) -> RetryPolicy:
    settings = config.async_
    return RetryPolicy(fn.max_retry_attempts, fn.max_event_age_s, settings.retry_delays_s,
                       settings.backoff_base_s, settings.backoff_max_s)


def destination_function(target: str) -> str | None:
    """The function a destination names (by name or Lambda ARN); None for a queue or "dlq"."""
    if target == "dlq" or ":sqs:" in target:
        return None
    return target.rpartition(":function:")[2] if ":function:" in target else target


class Stats:
    """Per function, for /metrics."""

    def __init__(self) -> None:
        self.retries: Counter[str] = Counter()
        self.delivered: Counter[str] = Counter()  # destination records sent (functions, queues)
        self.dead_lettered: Counter[str] = Counter()
        self.backlog: list[Backlog] = []


class AsyncInvoker:
    def __init__(self, config: Config, intake: Intake,
                 lookup: Callable[[str], FunctionPool | None], clients: Clients,
                 settings_of: Callable[[str], AsyncInvoke],
                 functions: Callable[[], list[str]], metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        # The functions this node runs: nodes sharing a store may each have others (a deleted
        # function's events then wait, within their age, for a node that has it).
        self.functions = functions
        # A function's settings as deployed: changed through the API without a new pool.
        self.settings_of = settings_of
        self.settings = config.async_
        self.intake = intake
        self.lookup = lookup
        self.clients = clients
        self.store = open_store(self.settings.store, config.server.data_dir,
                                synchronous=self.settings.synchronous)
        self.problem: str | None = "the event store is being opened"
        self.opened = asyncio.Event()
        self.tried = asyncio.Event()  # the first attempt to open the store is over
        self.stats = Stats()
        self.running: dict[str, Claim] = {}  # by request id: the events this node holds
        self.stopping = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: asyncio.Task[None] | None = None

    # --- accepting ---------------------------------------------------------------------------

    async def accept(self, function: str, payload: bytes) -> str:
        """Store a new event durably; its request id. Raises ``Unavailable``."""
        if (reason := self.intake.refusal()) is not None:
            raise Unavailable(reason)
        if self.problem is not None:
            raise Unavailable(f"asynchronous invocation is unavailable: {self.problem}")
        now = time.time()
        event = NewEvent(new_request_id(), function, payload, "event", now, now)
        try:
            await self.store.accept(event)
        except StoreError as e:
            log.error("cannot store an event for %s: %s", function, e)
            raise Unavailable(f"the event could not be stored: {e}") from None
        self._wake.set()
        return event.request_id

    def wake(self) -> None:
        """Look for due events now (one was stored by another part of this node)."""
        self._wake.set()

    # --- the loops -------------------------------------------------------------------------

    def start(self) -> None:
        self._main = asyncio.create_task(self._run())

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.store.open()
                break
            except StoreError as e:
                self.tried.set()
                failures += 1
                if failures == 1 or self.problem != str(e):
                    log.error("asynchronous invocation unavailable: %s (retrying)", e)
                self.problem = str(e)
                await asyncio.sleep(backoff_s(failures, random.random()))
        self.problem = None
        self.opened.set()
        self.tried.set()
        log.info("asynchronous events: %s", self.store.name)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._claims())
            group.create_task(self._renew())
            group.create_task(self._backlog())

    async def _claims(self) -> None:
        failures = 0
        while not self.stopping:
            free = self.settings.max_in_flight - len(self.running)
            claims: list[Claim] = []
            self._wake.clear()
            if free > 0:
                limit = min(free, CLAIM_BATCH)
                try:
                    claims = await self.store.claim(now=time.time(), limit=limit,
                                                    lease_s=self.settings.lease_s,
                                                    functions=self.functions())
                except StoreError as e:
                    failures += 1
                    self.metrics.source("async", "").error()  # of the node, not of a function
                    if failures == 1:
                        log.error("cannot claim events: %s (retrying)", e)
                    self.problem = str(e)
                    await asyncio.sleep(backoff_s(failures, random.random()))
                    continue
                if failures:
                    log.info("the event store answers again")
                    failures, self.problem = 0, None
                if claims:
                    self._claimed(claims)
                for claim in claims:
                    self.running[claim.request_id] = claim
                    task = asyncio.create_task(self._attempt(claim))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                if len(claims) == limit:
                    continue  # more may be due at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_s)

    async def _renew(self) -> None:
        """Keep the leases of the events running here, so no other node takes them over."""
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            leases = {claim.lease for claim in self.running.values()}
            if leases:
                try:
                    await self.store.extend(sorted(leases), time.time() + self.settings.lease_s)
                except StoreError as e:
                    self.metrics.source("async", "").error()
                    log.warning("cannot renew leases: %s", e)

    async def _backlog(self) -> None:
        while True:
            with contextlib.suppress(StoreError):
                self.stats.backlog = await self.store.backlog()
            await asyncio.sleep(BACKLOG_EVERY_S)

    def _claimed(self, claims: list[Claim]) -> None:
        """Per function, the claim's size and the wait of its oldest first attempt (a retry's
        wait is its policy's, not lag)."""
        now = time.time()
        sizes: Counter[str] = Counter()
        waits: dict[str, float] = {}
        for claim in claims:
            sizes[claim.function] += 1
            if claim.attempt == 1:
                waits[claim.function] = min(waits.get(claim.function, now), claim.received_at)
        for function, size in sizes.items():
            source = self.metrics.source("async", function)
            source.batch(size)
            if function in waits:
                source.lag(now - waits[function])

    # --- one attempt -------------------------------------------------------------------------

    async def _attempt(self, claim: Claim) -> None:
        try:
            await self._try(claim)
        except StoreError as e:  # its lease lapses and the event runs again: never lost
            self.metrics.source("async", claim.function).error()
            log.error("%s: cannot settle event %s: %s", claim.function, claim.request_id, e)
        except Exception:
            log.exception("%s: event %s failed in the router", claim.function, claim.request_id)
        finally:
            full = len(self.running) >= self.settings.max_in_flight
            self.running.pop(claim.request_id, None)
            if full:  # the claim loop waits for a free slot
                self._wake.set()

    async def _try(self, claim: Claim) -> None:
        pool = self.lookup(claim.function)
        settings = self.settings_of(claim.function)
        policy = policy_of(settings, self.config)
        if too_old(policy, claim.received_at, time.time()):
            await self._finish(claim, pool, settings, "EventAgeExceeded", claim.invokes,
                               claim.last_response)
            return
        if pool is None or pool.closing:
            # Deleted, or being replaced: as Lambda does while a function cannot run, the event
            # waits (with backoff) for as long as its age allows.
            await self._settle(claim, pool, settings, policy, "system_error", None)
            return
        if pool.config.max_workers == 0:
            # Reserved concurrency 0: throttled, as Lambda throttles it, until the event ages out.
            await self._settle(claim, pool, settings, policy, "throttle", None)
            return
        reservation = await self.intake.room(pool)
        if reservation is None:  # draining: the event stays for the next start, as it was
            await self.store.release(claim, now=time.time())
            return
        inv = Invocation(claim.payload, asyncio.get_running_loop().create_future(),
                         source=claim.source, invocation_type="Event", request_id=claim.request_id,
                         attempt=claim.attempt)
        try:
            future = self.intake.submit(pool, inv)
        except Unavailable:
            await self.store.release(claim, now=time.time())
            return
        finally:
            reservation.release()
        outcome = await future
        if self.stopping and outcome.status == "crash":
            # Killed by the shutdown's grace, not failed: it runs again, at once, after the restart.
            await self.store.release(claim, now=time.time())
            return
        response = None
        if outcome.status != "throttled":
            response = Response(outcome.payload, "Unhandled" if outcome.function_error else None)
        await self._settle(claim, pool, settings, policy, kind_of(outcome.status), response)

    async def _settle(self, claim: Claim, pool: FunctionPool | None, settings: AsyncInvoke,
                      policy: RetryPolicy, kind: Kind, response: Response | None) -> None:
        now = time.time()
        invokes = claim.invokes + (response is not None)
        decision = decide(policy, kind, invokes=invokes, requeues=claim.requeues,
                          received_at=claim.received_at, now=now)
        if not isinstance(decision, Finish):
            if await self.store.retry(claim, due_at=decision.due_at, response=response):
                self.stats.retries[claim.function] += 1
                # Claimed when due, not at the next poll after it.
                loop = asyncio.get_running_loop()
                loop.call_at(loop.time() + max(0.0, decision.due_at - time.time()), self._wake.set)
            return
        await self._finish(claim, pool, settings, decision.condition, invokes,
                           response or claim.last_response)

    async def _finish(self, claim: Claim, pool: FunctionPool | None, settings: AsyncInvoke,
                      condition: Condition, invokes: int, response: Response | None) -> None:
        target = settings.on_success if condition == "Success" else settings.on_failure
        if not target:
            await self.store.complete(claim)
            return
        now = time.time()
        arn = pool.arn if pool is not None else function_arn(self.config.server, claim.function)
        record = destination_record(request_id=claim.request_id, function_arn=arn,
                                    condition=condition, invoke_count=invokes,
                                    request_payload=claim.payload, response=response, at=now)
        if target == "dlq":
            if await self.store.dead_letter(claim, condition=condition, invokes=invokes,
                                            record=record, now=now):
                self.stats.dead_lettered[claim.function] += 1
                log.warning("%s: event %s dead-lettered (%s after %d invocation(s))",
                            claim.function, claim.request_id, condition, invokes)
            return
        function = destination_function(target)
        if function is not None:
            then = NewEvent(new_request_id(), function, record, "destination", now, now)
            if await self.store.complete(claim, then=then):
                self.stats.delivered[claim.function] += 1
                self._wake.set()
            return
        try:
            sqs = await self.clients.client("sqs")
            await sqs.send_message(QueueUrl=queue_url_of(target, self.clients.aws.endpoint_url or None),
                                   MessageBody=record.decode())
        except Exception as e:  # the record is kept where it can be redriven from
            self.metrics.source("async", claim.function).error()
            log.error("%s: cannot deliver event %s to %s: %s; dead-lettered instead",
                      claim.function, claim.request_id, target, e)
            if await self.store.dead_letter(claim, condition=condition, invokes=invokes,
                                            record=record, now=now):
                self.stats.dead_lettered[claim.function] += 1
            return
        if await self.store.complete(claim):
            self.stats.delivered[claim.function] += 1

    # --- shutdown ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Claim nothing more; the events running go on (the intake drains them)."""
        self.stopping = True
        self._wake.set()

    async def close(self) -> None:
        """After the pools drained: let the attempts settle, then close the store."""
        self.stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)
        if self._main is not None:
            self._main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self.opened.is_set():
            await self.store.close()
