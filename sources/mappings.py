"""Event source mappings: the SQS and S3 triggers of config.toml and those made through the Lambda
API, their pollers, and their persistence (``data_dir/event-source-mappings.json``).

A config trigger's mapping has a UUID derived from its function and place, so it is the same across
restarts, and it is read-only through the API, as a config function is. An API mapping is kept
across restarts, its pollers started again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from router.config import Config, QueueTrigger, S3Trigger, filter_patterns
from router.intake.intake import Intake
from router.metrics.instruments import Metrics
from sources.aws import Clients
from sources.filters import compile_filters
from sources.poller import Poller, S3Match, Target, queue_problem
from sources.sqs_event import queue_arn_of, queue_url_of

if TYPE_CHECKING:
    from router.run.pool import FunctionPool

log = logging.getLogger("headwater.sources")

FILE = "event-source-mappings.json"
CONFIG_NAMESPACE = uuid.UUID("5b7f2e0a-63c1-4c5e-9d8e-6f1f6a3c2b10")  # of config triggers' UUIDs
STOP_S = 10.0  # how long a stopping poller may take to delete what succeeded


class Mapping(msgspec.Struct):
    """One event source mapping, as stored; the API's names are in ``report``."""

    uuid: str
    function: str
    event_source_arn: str  # the queue's ARN
    queue_url: str
    batch_size: int = 10
    window_s: int = 0
    enabled: bool = True
    filters: list[str] = []
    report_failures: bool = False
    concurrency: int | None = None
    endpoint_url: str = ""
    region: str = ""
    s3: S3Match | None = None
    from_config: bool = False
    last_modified: float = 0.0


def config_mappings(config: Config, clients: Clients) -> list[Mapping]:
    out = []
    for fn in config.functions:
        for i, trigger in enumerate(fn.triggers):
            if not isinstance(trigger, QueueTrigger):
                continue
            if not (trigger.queue_url or trigger.queue_arn):
                continue  # an S3 trigger for the webhook only
            endpoint, region = clients.where(trigger.endpoint_url, trigger.region)
            if trigger.queue_arn:
                arn, url = trigger.queue_arn, queue_url_of(trigger.queue_arn, endpoint or None)
            else:
                arn, url = queue_arn_of(trigger.queue_url, region), trigger.queue_url
            s3 = None
            filters: list[str] = []
            report = False
            if isinstance(trigger, S3Trigger):
                s3 = S3Match.of(trigger)
            else:
                filters, report = filter_patterns(trigger.filters), trigger.report_batch_item_failures
            out.append(Mapping(
                uuid=str(uuid.uuid5(CONFIG_NAMESPACE, f"{fn.name}/{i}")), function=fn.name,
                event_source_arn=arn, queue_url=url, batch_size=trigger.batch_size,
                window_s=trigger.batch_window_s, enabled=trigger.enabled, filters=filters,
                report_failures=report, concurrency=trigger.maximum_concurrency,
                endpoint_url=trigger.endpoint_url, region=trigger.region, s3=s3, from_config=True,
                last_modified=time.time()))
    return out


class Mappings:
    def __init__(self, config: Config, intake: Intake,
                 lookup: Callable[[str], FunctionPool | None], metrics: Metrics) -> None:
        self.config = config
        self.intake = intake
        self.lookup = lookup
        self.metrics = metrics
        self.clients = Clients(config.aws, config.server.region)
        self.path = Path(config.server.data_dir) / FILE
        self.mappings: dict[str, Mapping] = {}
        self.pollers: dict[str, Poller] = {}
        self.results: dict[str, str] = {}  # LastProcessingResult of mappings whose pollers stopped
        self.refused: dict[str, str] = {}  # config mappings whose queue was refused at start: why
        self._tasks: set[asyncio.Task[None]] = set()
        # The API's Create, Update and Delete await (the queue's check, the pollers' stop) between
        # reading the mappings and changing them; one at a time, a duplicate cannot slip in
        # between the check and the insert, nor two updates of one mapping each start pollers.
        self.writing = asyncio.Lock()
        for m in [*config_mappings(config, self.clients), *self._load()]:
            self.mappings[m.uuid] = m

    def _load(self) -> list[Mapping]:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=list[Mapping])
        except FileNotFoundError:
            return []
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            log.error("%s: cannot read (%s); API-made event source mappings are not running",
                      self.path, e)
            return []

    def save(self) -> None:
        stored = [m for m in self.mappings.values() if not m.from_config]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.encode(stored))
        os.replace(temporary, self.path)

    def target(self, m: Mapping) -> Target:
        endpoint, region = self.clients.where(m.endpoint_url, m.region)
        pool = self.lookup(m.function)
        concurrency = m.concurrency or max(1, pool.config.max_workers if pool is not None else 1)
        return Target(
            uuid=m.uuid, function=m.function, queue_url=m.queue_url, queue_arn=m.event_source_arn,
            region=region, endpoint_url=endpoint, batch_size=m.batch_size, window_s=m.window_s,
            concurrency=concurrency, report_failures=m.report_failures,
            filters=compile_filters(m.filters) if m.filters else None, s3=m.s3)

    async def problem(self, m: Mapping) -> str | None:
        """Why the mapping's queue cannot serve its function (Lambda's refusal), if it cannot."""
        pool = self.lookup(m.function)
        timeout = pool.config.timeout_s if pool is not None else 0
        return await queue_problem(self.clients, self.target(m), timeout)

    # --- running ---------------------------------------------------------------------------

    def start(self) -> None:
        for m in self.mappings.values():
            if m.enabled:
                self._begin(m)

    def _begin(self, m: Mapping) -> None:
        """Check a config mapping's queue first (Lambda refuses it at creation; config.toml can
        only be refused here), then poll."""
        if m.from_config:
            task = asyncio.ensure_future(self._checked_start(m))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self.run(m)

    async def _checked_start(self, m: Mapping) -> None:
        try:
            if m.s3 is not None and m.s3.manage:
                await self._notify(m)
            refused = await self.problem(m)
        except Exception as e:  # an endpoint down at start: poll anyway, the poller retries
            log.warning("%s: cannot check queue %s yet (%s)", m.function, m.event_source_arn, e)
            refused = None
        if refused:
            self.refused[m.uuid] = refused
            log.error("%s: trigger on %s refused: %s", m.function, m.event_source_arn, refused)
        elif self.intake.draining:
            return
        else:
            self.run(m)

    async def _notify(self, m: Mapping) -> None:
        """Make the bucket notify the trigger's queue: this trigger's entry (by its Id) is
        written, the bucket's other notifications kept."""
        s3 = m.s3
        assert s3 is not None
        client = await self.clients.client("s3", m.endpoint_url, m.region)
        current = await client.get_bucket_notification_configuration(Bucket=s3.bucket)
        current.pop("ResponseMetadata", None)
        ident = f"headwater-{m.uuid}"
        entry: dict[str, object] = {"Id": ident, "QueueArn": m.event_source_arn,
                                    "Events": list(s3.events)}
        rules = [{"Name": name, "Value": value}
                 for name, value in (("prefix", s3.prefix), ("suffix", s3.suffix)) if value]
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        queues = [q for q in current.get("QueueConfigurations", []) if q.get("Id") != ident]
        await client.put_bucket_notification_configuration(
            Bucket=s3.bucket, NotificationConfiguration={**current,
                                                         "QueueConfigurations": [*queues, entry]})
        log.info("%s: bucket %s notifies %s", m.function, s3.bucket, m.event_source_arn)

    def run(self, m: Mapping) -> None:
        """Start polling (callers halt a mapping's pollers before starting new ones)."""
        self.refused.pop(m.uuid, None)
        if (old := self.pollers.get(m.uuid)) is not None:
            old.stop()
        target = self.target(m)
        poller = Poller(target, self.clients, self.intake, self.lookup,
                        self.metrics.source(target.kind, target.function))
        poller.last_result = self.results.get(m.uuid, poller.last_result)
        self.pollers[m.uuid] = poller
        poller.start()

    async def reload(self, config: Config) -> None:
        """The config file's mappings as ``config`` has them: removed and changed ones stop (their
        batches finish), new and changed ones start; unchanged ones poll on undisturbed."""
        self.config = config
        wanted = {m.uuid: m for m in config_mappings(config, self.clients)}
        async with self.writing:
            for key, m in [(k, m) for k, m in self.mappings.items() if m.from_config]:
                new = wanted.get(key)
                if new is None or msgspec.structs.replace(new, last_modified=m.last_modified) != m:
                    await self.halt(m)
                    del self.mappings[key]
                    self.refused.pop(key, None)
            for key, m in wanted.items():
                if key not in self.mappings:
                    self.mappings[key] = m
                    if m.enabled:
                        self._begin(m)

    async def halt(self, m: Mapping) -> None:
        poller = self.pollers.pop(m.uuid, None)
        if poller is not None:
            self.results[m.uuid] = poller.last_result  # Lambda keeps it across updates
            poller.stop()
            await poller.wait(STOP_S)

    def stop(self) -> None:
        """Receive no more (at shutdown, before the functions drain)."""
        for task in self._tasks:
            task.cancel()
        for poller in self.pollers.values():
            poller.stop()

    async def close(self) -> None:
        """Once the functions have drained: let the pollers delete what succeeded, then close."""
        await asyncio.gather(*(p.wait(STOP_S) for p in self.pollers.values()))
        await self.clients.close()

    # --- reporting -------------------------------------------------------------------------

    def state(self, m: Mapping) -> str:
        return "Enabled" if m.enabled else "Disabled"

    def health(self) -> dict[str, dict[str, str]]:
        """The mappings that are not polling as they should, for /readyz."""
        out = {}
        for m in self.mappings.values():
            poller = self.pollers.get(m.uuid)
            problem = self.refused.get(m.uuid) or (poller.problem if poller is not None else None)
            if m.enabled and problem:
                out[m.uuid] = {"function": m.function, "eventSourceArn": m.event_source_arn,
                               "problem": problem}
        return out

    def last_result(self, m: Mapping) -> str:
        if m.uuid in self.refused:
            return f"PROBLEM: {self.refused[m.uuid]}"
        poller = self.pollers.get(m.uuid)
        if poller is not None:
            return poller.last_result
        return self.results.get(m.uuid, "No records processed")
