"""SQS pollers: the queue side of an event source mapping, for SQS and S3 triggers.

A mapping's pollers long-poll its queue, gather a batch (up to ``batch_size`` messages, for up to
``batch_window_s``), invoke the function through the intake and delete only what succeeded. A
failed batch is left alone: its messages come back after the queue's visibility timeout, and the
queue's redrive policy moves them to its dead-letter queue after ``maxReceiveCount`` receives.
Before receiving, a poller waits for room in the function's queue (``Intake.room``), so a slow
function stops the receiving instead of filling a buffer. Pollers scale with the backlog: a full
batch starts another, up to the mapping's maximum concurrency; an empty receive stops one, down to
one. An endpoint that fails (refused, timing out, 5xx, bad credentials) is retried with a capped,
jittered backoff, and the mapping's state says so until it recovers.

An S3 trigger's queue carries the bucket's notifications: each message holds S3 records, each
wanted record is one invocation of ``{"Records": [record]}`` (as Lambda invokes for S3), and a
message is deleted once all its records succeeded; S3's test event and records the trigger does
not want are deleted without an invocation.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from botocore.exceptions import BotoCoreError, ClientError

from router.config import S3Trigger
from router.intake.intake import Intake, Reservation, Unavailable
from router.intake.invocation import MAX_SYNC_PAYLOAD, Invocation, Outcome
from router.metrics.instruments import SourceMetrics
from sources import s3_event, sqs_event
from sources.aws import LONG_POLL_S, Clients, backoff_s
from sources.filters import Filters

if TYPE_CHECKING:
    from router.run.pool import FunctionPool

log = logging.getLogger("headwater.sources")

MAX_RECEIVE = 10  # SQS's most messages per ReceiveMessage and per DeleteMessageBatch
RECORD_OVERHEAD = 1024  # bytes an SQS record adds to its body in the event, roughly, for the 6 MB bound
DELETE_ATTEMPTS = 5
ENDPOINT_ERRORS = (BotoCoreError, ClientError, OSError, asyncio.TimeoutError)


class S3Match(msgspec.Struct, frozen=True):
    """What an S3 trigger wants of a bucket's notifications, from the queue or its webhook."""

    bucket: str
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""
    manage: bool = False  # Headwater writes the bucket's notification configuration

    @classmethod
    def of(cls, trigger: S3Trigger) -> S3Match:
        return cls(trigger.bucket, tuple(trigger.events), trigger.prefix, trigger.suffix,
                   trigger.manage_notifications)

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    def wants(self, record: dict[str, Any]) -> bool:
        return (record.get("s3", {}).get("bucket", {}).get("name") == self.bucket
                and s3_event.wanted(record, self.events, self.prefix, self.suffix))


class Target(msgspec.Struct, frozen=True):
    """What a mapping's pollers need, resolved: where the queue is and what to do with it."""

    uuid: str
    function: str
    queue_url: str
    queue_arn: str
    region: str
    endpoint_url: str
    batch_size: int
    window_s: int
    concurrency: int
    report_failures: bool
    filters: Filters | None = None
    s3: S3Match | None = None  # an S3 trigger's queue: its messages are bucket notifications

    @property
    def fifo(self) -> bool:
        return self.queue_arn.endswith(".fifo")

    @property
    def kind(self) -> str:
        return "s3" if self.s3 is not None else "sqs"

    @property
    def source_arn(self) -> str:
        return self.s3.arn if self.s3 is not None else self.queue_arn


def pollers_wanted(current: int, received: int, asked: int, maximum: int) -> int:
    """How many pollers a mapping should have after one of them received ``received`` of the
    ``asked`` messages: one more after a full receive (a backlog), one fewer after an empty one."""
    if received >= asked and current < maximum:
        return current + 1
    if received == 0 and current > 1:
        return current - 1
    return current


def oldest_age_s(messages: list[dict[str, Any]], now: float) -> float | None:
    """How long ago the oldest of ``messages`` was sent (SQS's ``SentTimestamp``, epoch
    milliseconds); None when no message says."""
    sent = [int(m["Attributes"]["SentTimestamp"]) for m in messages
            if "SentTimestamp" in m.get("Attributes", {})]
    return now - min(sent) / 1000 if sent else None


def batch_entries(messages: list[dict[str, Any]], **extra: object) -> Iterator[list[dict[str, Any]]]:
    """The Entries of SQS batch calls (delete, change visibility) for ``messages``: at most
    MAX_RECEIVE a call, each with its receipt handle and ``extra``."""
    for start in range(0, len(messages), MAX_RECEIVE):
        yield [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], **extra}
               for i, m in enumerate(messages[start:start + MAX_RECEIVE])]


def kept_ids(target: Target, records: list[dict[str, Any]], outcome: Outcome | None) -> set[str]:
    """The messageIds of an invoked batch that stay in the queue: all of them unless the function
    succeeded; with ReportBatchItemFailures, those it reported (all if its answer is invalid); on a
    FIFO queue also every later message of a failed message's group, whose order must hold."""
    ids = [r["messageId"] for r in records]
    if outcome is None or outcome.status != "success":
        return set(ids)
    if not target.report_failures:
        return set()
    failed = sqs_event.failed_items(outcome.payload, ids)
    if failed is None:
        return set(ids)
    if target.fifo and failed:
        return sqs_event.fifo_kept(
            [(r["messageId"], r["attributes"].get("MessageGroupId", "")) for r in records], failed)
    return failed


class Poller:
    """The pollers of one mapping."""

    def __init__(self, target: Target, clients: Clients, intake: Intake,
                 lookup: Callable[[str], FunctionPool | None], metrics: SourceMetrics) -> None:
        self.target = target
        self.metrics = metrics
        self.clients = clients
        self.intake = intake
        self.lookup = lookup
        self.loops: set[asyncio.Task[None]] = set()
        self._receiving: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.problem: str | None = None  # the endpoint's last failure, until it recovers
        self.last_result = "No records processed"

    def start(self) -> None:
        self._spawn()

    def _spawn(self) -> None:
        task = asyncio.ensure_future(self._loop())
        self.loops.add(task)
        task.add_done_callback(self.loops.discard)

    def stop(self) -> None:
        """Stop receiving: a receive under way is cancelled (what it would have returned comes
        back after the visibility timeout); a batch being processed finishes, deletes included."""
        self.stopping = True
        for task in self._receiving:
            task.cancel()

    async def wait(self, timeout_s: float) -> None:
        if self.loops:
            _, pending = await asyncio.wait(self.loops, timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # --- one poller ------------------------------------------------------------------------

    async def _loop(self) -> None:
        failures = 0
        carry: list[dict[str, Any]] = []
        while not self.stopping:
            pool = self.lookup(self.target.function)
            reservation = await self.intake.room(pool) if pool is not None else None
            if pool is None or reservation is None:
                break
            try:
                if self.stopping:
                    break
                try:
                    gathered = await self._gather(carry)
                except asyncio.CancelledError:
                    if self.stopping:
                        break
                    raise
                except ENDPOINT_ERRORS as e:
                    failures += 1
                    self.metrics.error()
                    self._failed(e)
                    reservation.release()
                    await asyncio.sleep(backoff_s(failures, random.random()))
                    continue
                if failures or self.problem:
                    failures = 0
                    self._recovered()
                messages, carry = gathered
                asked = min(MAX_RECEIVE, self.target.batch_size)
                wanted = pollers_wanted(len(self.loops), len(messages), asked, self.target.concurrency)
                if wanted > len(self.loops) and not self.stopping:
                    self._spawn()
                if messages:
                    self._received(messages)
                    await self._process(pool, messages, reservation)
                elif wanted < len(self.loops):
                    break
            finally:
                reservation.release()
        if carry:  # received beyond the last batch, never run: back to the queue at once
            await self._return(carry)

    async def _gather(self, carry: list[dict[str, Any]]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Receive one batch: up to batch_size messages, within the batching window from the first
        (one receive when the window is 0), and under Lambda's 6 MB payload. Returns the batch and
        the messages received beyond it, which start the next."""
        target = self.target
        client = await self.clients.client("sqs", target.endpoint_url, target.region)
        batch, size, deadline = [], 0, None
        pending = list(carry)
        while True:
            while pending:
                cost = len(pending[0].get("Body", "")) + RECORD_OVERHEAD
                if batch and (len(batch) >= target.batch_size or size + cost > MAX_SYNC_PAYLOAD):
                    return batch, pending
                batch.append(pending.pop(0))
                size += cost
            if len(batch) >= target.batch_size:
                return batch, []
            if batch and deadline is None:
                if target.window_s == 0:
                    return batch, []
                deadline = time.monotonic() + target.window_s
            wait = LONG_POLL_S
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return batch, []
                wait = min(LONG_POLL_S, max(1, round(left)))
            response = await self._receive(client, min(MAX_RECEIVE, target.batch_size - len(batch)),
                                           wait)
            got = response.get("Messages", [])
            if not got and not batch:
                return [], []
            pending = got

    async def _receive(self, client: Any, count: int, wait: int) -> dict[str, Any]:
        task = asyncio.ensure_future(client.receive_message(
            QueueUrl=self.target.queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=wait,
            AttributeNames=["All"], MessageAttributeNames=["All"]))
        self._receiving.add(task)
        try:
            return await task
        finally:
            self._receiving.discard(task)

    async def _process(self, pool: FunctionPool, messages: list[dict[str, Any]],
                       reservation: Reservation) -> None:
        target = self.target
        records = [sqs_event.sqs_record(m, target.queue_arn, target.region) for m in messages]
        if target.s3 is not None:
            done = await self._run_s3(pool, records, reservation)
        else:
            done = await self._run_sqs(pool, records, reservation)
        await self._delete([m for m, ok in zip(messages, done, strict=True) if ok])
        if self.stopping:
            # Refused or cut short by the shutdown: visible again now, for the next poller (this
            # daemon restarted, or another), not after the visibility timeout.
            await self._return([m for m, ok in zip(messages, done, strict=True) if not ok])

    async def _run_sqs(self, pool: FunctionPool, records: list[dict[str, Any]],
                       reservation: Reservation) -> list[bool]:
        filters = self.target.filters
        matched = [r for r in records if filters is None or filters.matches(r)]
        if not matched:
            return [True] * len(records)  # filtered out: deleted without an invocation, as Lambda
        outcome = await self._invoke(pool, sqs_event.sqs_event(matched), reservation)
        kept = kept_ids(self.target, matched, outcome)
        return [r["messageId"] not in kept for r in records]

    async def _run_s3(self, pool: FunctionPool, records: list[dict[str, Any]],
                      reservation: Reservation) -> list[bool]:
        s3 = self.target.s3
        assert s3 is not None
        invocations: list[tuple[int, asyncio.Future[Outcome | None]]] = []
        done = [True] * len(records)
        for i, record in enumerate(records):
            notified = s3_event.s3_records(record["body"])
            if notified is None:
                log.warning("%s: a message on %s is not an S3 notification; deleted",
                            self.target.function, self.target.queue_arn)
                continue
            chosen = [item for item in notified if s3.wants(item)]
            invocations += [
                (i, asyncio.ensure_future(self._invoke(pool, s3_event.s3_event([item]), reservation)))
                for item in chosen]
        for i, future in invocations:
            outcome = await future
            if outcome is None or outcome.status != "success":
                done[i] = False
        return done

    async def _invoke(self, pool: FunctionPool, event: dict[str, Any],
                      reservation: Reservation) -> Outcome | None:
        inv = Invocation(msgspec.json.encode(event), asyncio.get_running_loop().create_future(),
                         source=self.target.kind, source_arn=self.target.source_arn)
        reservation.release()  # the invocation takes the room it held
        try:
            outcome = await self.intake.submit(pool, inv)
        except Unavailable:
            self.last_result = "PROBLEM: Function call failed"
            return None
        self.last_result = "OK" if outcome.status == "success" else "PROBLEM: Function call failed"
        return outcome

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        """Delete what succeeded, retrying a failing endpoint: a message not deleted comes back
        after the visibility timeout and runs again."""
        target = self.target
        for entries in batch_entries(messages):
            for attempt in range(1, DELETE_ATTEMPTS + 1):
                try:
                    client = await self.clients.client("sqs", target.endpoint_url, target.region)
                    response = await client.delete_message_batch(QueueUrl=target.queue_url,
                                                                 Entries=entries)
                except ENDPOINT_ERRORS as e:
                    self.metrics.error()
                    if attempt == DELETE_ATTEMPTS:
                        log.error("%s: cannot delete %d message(s) from %s (%s); they will run again",
                                  target.function, len(entries), target.queue_arn, e)
                        break
                    await asyncio.sleep(backoff_s(attempt, random.random()))
                    continue
                failed = {f["Id"] for f in response.get("Failed", [])}
                if not failed:
                    break
                entries = [e for e in entries if e["Id"] in failed]

    async def _return(self, messages: list[dict[str, Any]]) -> None:
        """Make messages visible again at once (visibility timeout 0); one attempt, as this runs
        at shutdown: a message not returned comes back after its visibility timeout."""
        target = self.target
        for entries in batch_entries(messages, VisibilityTimeout=0):
            try:
                client = await self.clients.client("sqs", target.endpoint_url, target.region)
                await client.change_message_visibility_batch(QueueUrl=target.queue_url,
                                                             Entries=entries)
            except ENDPOINT_ERRORS as e:
                self.metrics.error()
                log.warning("%s: cannot return %d message(s) to %s (%s); they come back after "
                            "their visibility timeout", target.function, len(entries),
                            target.queue_arn, e)

    # --- state -----------------------------------------------------------------------------

    def _received(self, messages: list[dict[str, Any]]) -> None:
        self.metrics.batch(len(messages))
        age = oldest_age_s(messages, time.time())
        if age is not None:
            self.metrics.lag(age)

    def _failed(self, error: BaseException) -> None:
        text = describe(error)
        if self.problem != text:
            log.warning("%s: cannot poll %s: %s; retrying", self.target.function,
                        self.target.queue_arn, text)
        self.problem = text
        self.last_result = f"PROBLEM: {text}"

    def _recovered(self) -> None:
        if self.problem is not None:
            log.info("%s: polling %s again", self.target.function, self.target.queue_arn)
        self.problem = None


def describe(error: BaseException) -> str:
    """An endpoint failure in one line: AWS's error code and message, or the connection's."""
    if isinstance(error, ClientError):
        info = error.response.get("Error", {})
        return f"{info.get('Code', 'Error')}: {info.get('Message', '')}".rstrip(": ")
    return str(error) or type(error).__name__


async def queue_problem(clients: Clients, target: Target, function_timeout_s: int) -> str | None:
    """Why Lambda would refuse a mapping of this queue to this function (the queue does not exist,
    or its visibility timeout is shorter than the function's timeout), with Lambda's words; raises
    the endpoint's error if the queue cannot be asked."""
    client = await clients.client("sqs", target.endpoint_url, target.region)
    try:
        response = await client.get_queue_attributes(QueueUrl=target.queue_url,
                                                     AttributeNames=["VisibilityTimeout"])
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if "NonExistentQueue" in code or code == "QueueDoesNotExist":
            return (f"Error occurred while ReceiveMessage. SQS Error Code: "
                    f"AWS.SimpleQueueService.NonExistentQueue. The queue {target.queue_arn} does "
                    "not exist")
        raise
    visibility = int(response.get("Attributes", {}).get("VisibilityTimeout", "30"))
    if visibility < function_timeout_s:
        return (f"Queue visibility timeout: {visibility} seconds is less than Function timeout: "
                f"{function_timeout_s} seconds")
    return None
