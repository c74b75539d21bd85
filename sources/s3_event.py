"""S3 event notifications delivered through an SQS queue, and whether a record matches a trigger.
Pure: no clock, no I/O.

``s3_records(body)`` reads one SQS message body: the notification's ``Records``; ``[]`` for the
``s3:TestEvent`` message S3 sends when a notification configuration is saved (it has no records,
and a function must not be invoked for it); None when the body is not an S3 notification.

``wanted(record, events, prefix, suffix)`` is S3's own filtering, redone on our side so that one
queue can feed triggers with different filters: an event type (``s3:ObjectCreated:*``, or an
exact one such as ``s3:ObjectRemoved:Delete``) and a key that starts with ``prefix`` and ends with
``suffix``. S3 filters on the key name, but writes the key into the record form-URL-encoded ("red
flower.jpg" becomes "red+flower.jpg", per the event message structure page of the S3 User Guide),
so the key is decoded before it is compared. Keys and event names are case-sensitive.

References: https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html
and https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-how-to-event-types-and-destinations.html
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

EVENT_SOURCE = "aws:s3"
TEST_EVENT = "s3:TestEvent"
EVENT_TYPE_PREFIX = "s3:"


def s3_records(body: str) -> list[dict[str, Any]] | None:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    if message.get("Service") == "Amazon S3" and message.get("Event") == TEST_EVENT:
        return []
    records = message.get("Records")
    # S3 never sends an empty list, and every record of its own names its source: anything else
    # (an SNS envelope, another service's event) is not ours to run an S3 trigger for.
    if not isinstance(records, list) or not records:
        return None
    if not all(isinstance(record, dict) and record.get("eventSource") == EVENT_SOURCE for record in records):
        return None
    return records


def wanted(record: Mapping[str, Any], events: Iterable[str], prefix: str, suffix: str) -> bool:
    name = record.get("eventName")
    if not isinstance(name, str) or not any(event_matches(pattern, name) for pattern in events):
        return False
    key = object_key(record)
    return key is not None and key.startswith(prefix) and key.endswith(suffix)


def event_matches(pattern: str, event_name: str) -> bool:
    """Whether a configured event type (``s3:ObjectCreated:*``) covers a record's ``eventName``
    (``ObjectCreated:Put``), which S3 writes without the ``s3:`` of the type's name."""
    if not pattern.startswith(EVENT_TYPE_PREFIX):
        return False
    # MinIO's webhook writes the name with the type's prefix: "s3:ObjectCreated:Put".
    event_name = event_name.removeprefix(EVENT_TYPE_PREFIX)
    kind = pattern.removeprefix(EVENT_TYPE_PREFIX)
    # S3's only wildcard is a whole last part: "s3:ObjectCreated:*", never "s3:Object*".
    if kind.endswith(":*"):
        return event_name.startswith(kind[:-1])
    return event_name == kind


def object_key(record: Mapping[str, Any]) -> str | None:
    """The record's object key as it is named in the bucket; the record is left as S3 wrote it."""
    s3 = record.get("s3")
    obj = s3.get("object") if isinstance(s3, dict) else None
    key = obj.get("key") if isinstance(obj, dict) else None
    return unquote_plus(key) if isinstance(key, str) else None


def s3_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}
