"""The event a schedule hands its function, EventBridge's Scheduled Event for one tick, and where
a schedule resumes after the daemon was down.

A tick is identified by its trigger and its scheduled time; the event's ``id`` is derived from
both, so two daemons that build the event of the same tick build the same bytes, and ``time`` is
the scheduled time (to the second, as EventBridge writes it), not the moment it was sent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

import msgspec

from sources.cron import Schedule, latest_fire

# A fixed namespace for the ids of ticks: uuid5(namespace, "ARN@TIME") is the same on every node.
TICK_NAMESPACE = uuid.UUID("3f1c1b0e-5d1e-4c8a-9a51-7c2b8e4f6a10")


class ScheduledEvent(msgspec.Struct, frozen=True, rename={"detail_type": "detail-type"}):
    version: str
    id: str
    detail_type: str
    source: str
    account: str
    time: str
    region: str
    resources: list[str]
    detail: dict[str, object]


def rule_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:events:{region}:{account}:rule/{name}"


def event_time(at: datetime) -> str:
    """``2019-03-01T01:23:45Z``: EventBridge's time, whole seconds, UTC."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_event(arn: str, at: datetime, *, account: str, region: str) -> ScheduledEvent:
    time = event_time(at)
    return ScheduledEvent(
        version="0", id=str(uuid.uuid5(TICK_NAMESPACE, f"{arn}@{time}")), detail_type="Scheduled Event",
        source="aws.events", account=account, time=time, region=region, resources=[arn], detail={})


def encode(event: ScheduledEvent) -> bytes:
    return msgspec.json.encode(event)


CatchUp = Literal["none", "latest"]


def resume(schedule: Schedule, last_fired: datetime | None, now: datetime,
           catch_up: CatchUp) -> datetime | None:
    """The tick to fire at once when a schedule starts at ``now``: with ``catch_up = "latest"``,
    the last one missed since ``last_fired`` (the store's record of the trigger), if any; none
    for a trigger that never fired (it missed nothing) or with ``"none"``. The ticks after it are
    ``next_fire(schedule, now)`` and on."""
    if catch_up == "none" or last_fired is None:
        return None
    return latest_fire(schedule, last_fired, now)
