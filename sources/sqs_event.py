"""SQS messages as the records of Lambda's SQS event, and what a function's partial batch response
asks the poller to keep. Pure: no clock, no I/O.

``sqs_record(message, queue_arn, region)`` turns one message of a ReceiveMessage response (as
botocore returns it, asked for every attribute) into one of the event's ``Records``, with the keys
in the order of the Lambda Developer Guide's examples
(https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html). Those examples carry no
``md5OfMessageAttributes``, so neither do our records, although SQS returns one.

``failed_items(payload, batch_ids)`` reads the function's response under
``FunctionResponseTypes=["ReportBatchItemFailures"]`` by the documented success and failure
conditions (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): the
set of messageIds to leave in the queue, empty when every message succeeded, or None when the
response is invalid and the whole batch counts as failed. A function that raised is a failure of
the whole batch too, but the caller knows that without reading a payload.

FIFO queues: the same page says a function "should stop processing messages after the first
failure and return all failed and unprocessed messages in batchItemFailures". Lambda takes the
function's word for it. The caller should not: ``fifo_kept(ordered, failed)`` widens the set to
the first failure of each message group and every later message of that group, so that deleting
a message can never reorder its group when a function reports only the message that failed.

``parse_sqs_arn``, ``queue_url_of`` and ``queue_arn_of`` move between a queue's ARN and its URL.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

EVENT_SOURCE = "aws:sqs"

# The order of the documented examples, whose FIFO record interleaves the FIFO attributes with the
# standard ones. Attributes outside this list (SQS may add more) do not reach functions until
# they are added here; the last two are not in the examples, so their place is our choice.
ATTRIBUTE_ORDER = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
)

PARTITION_DOMAINS = {"aws": "amazonaws.com", "aws-cn": "amazonaws.com.cn", "aws-us-gov": "amazonaws.com"}

ARN = re.compile(r"arn:(aws|aws-cn|aws-us-gov):sqs:([a-z]{2}(?:-[a-z]+)+-\d+):(\d{12}):(.+)")
ACCOUNT = re.compile(r"\d{12}")
# The CreateQueue limit is 80 characters in all, and the FIFO quotas page says the .fifo suffix
# counts towards it, so a FIFO queue's stem is at most 75.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}|[A-Za-z0-9_-]{1,75}\.fifo")


def sqs_record(message: Mapping[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    attributes: Mapping[str, str] = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {name: attributes[name] for name in ATTRIBUTE_ORDER if name in attributes},
        "messageAttributes": {
            name: message_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": EVENT_SOURCE,
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """One MessageAttributeValue in Lambda's lower-camel form: ``stringValue`` or ``binaryValue``
    (whichever the message has), then both list fields, always present, then ``dataType``."""
    attribute: dict[str, Any] = {}
    if "StringValue" in value:
        attribute["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        attribute["binaryValue"] = base64_text(value["BinaryValue"])
    attribute["stringListValues"] = list(value.get("StringListValues", []))
    attribute["binaryListValues"] = [base64_text(item) for item in value.get("BinaryListValues", [])]
    attribute["dataType"] = value["DataType"]
    return attribute


def base64_text(blob: bytes | str) -> str:
    # botocore decodes blobs to bytes; a str is a response read off the wire, already base64.
    if isinstance(blob, str):
        return blob
    return base64.b64encode(blob).decode("ascii")


def sqs_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


def failed_items(payload: bytes, batch_ids: Iterable[str]) -> set[str] | None:
    """The messageIds the function's response reports as failed (to keep in the queue): an empty
    set if all succeeded, None if the response is invalid, which fails the whole batch."""
    if not payload.strip():
        # No body at all is the null response of a runtime that sends nothing for "no value".
        return set()
    try:
        response = json.loads(payload, parse_constant=reject_constant)
    except (ValueError, RecursionError):
        return None
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    failures = response.get("batchItemFailures")
    if failures is None:
        # Missing counts as a null list: a function that returns something else (a status
        # object, say) has reported no failures.
        return set()
    if not isinstance(failures, list):
        return None
    batch = set(batch_ids)
    kept: set[str] = set()
    for failure in failures:
        if not isinstance(failure, dict):
            return None
        # A missing key is the documented "bad key name"; null, "" and unknown ids fail too.
        identifier = failure.get("itemIdentifier")
        if not isinstance(identifier, str) or not identifier or identifier not in batch:
            return None
        kept.add(identifier)
    return kept


def reject_constant(name: str) -> Any:
    # NaN and Infinity are Python's extension, not JSON.
    raise ValueError(f"{name} is not JSON")


def fifo_kept(ordered: Sequence[tuple[str, str]], failed: set[str]) -> set[str]:
    """For a FIFO batch given as (messageId, MessageGroupId) pairs in the event's order, the ids
    to keep: the first failed message of each group and every message after it in that group.
    Messages of groups without a failure are deleted as usual."""
    stopped: set[str] = set()
    kept: set[str] = set()
    for message_id, group in ordered:
        if group in stopped or message_id in failed:
            stopped.add(group)
            kept.add(message_id)
    return kept


def parse_sqs_arn(arn: str) -> tuple[str, str, str]:
    """``arn:aws:sqs:REGION:ACCOUNT:NAME`` → (region, account, name); ValueError otherwise."""
    match = ARN.fullmatch(arn)
    if match is None or not QUEUE_NAME.fullmatch(match[4]):
        raise ValueError(f"not an SQS queue ARN: {arn!r}")
    return match[2], match[3], match[4]


def queue_url_of(arn: str, endpoint_url: str | None) -> str:
    """The queue's URL at ``endpoint_url`` (moto, a local SQS), or at SQS's own regional endpoint."""
    region, account, name = parse_sqs_arn(arn)
    if endpoint_url is None:
        partition = arn.split(":", 2)[1]
        endpoint_url = f"https://sqs.{region}.{PARTITION_DOMAINS[partition]}"
    return f"{endpoint_url.rstrip('/')}/{account}/{name}"


def queue_arn_of(url: str, region: str) -> str:
    """The ARN of the queue at ``http(s)://host[:port]/ACCOUNT/NAME``. The region is given, since
    a local endpoint's host does not name one."""
    parts = urlsplit(url)
    try:
        _ = parts.port  # a port that is not a number raises only when read
    except ValueError:
        raise ValueError(f"not an SQS queue URL: {url!r}") from None
    segments = parts.path.split("/")
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or len(segments) != 3
        or segments[0]
        or not ACCOUNT.fullmatch(segments[1])
    ):
        raise ValueError(f"not an SQS queue URL: {url!r}")
    if parts.hostname.endswith(".amazonaws.com.cn"):
        partition = "aws-cn"
    elif region.startswith("us-gov-"):
        partition = "aws-us-gov"
    else:
        partition = "aws"
    arn = f"arn:{partition}:sqs:{region}:{segments[1]}:{segments[2]}"
    try:
        parse_sqs_arn(arn)  # the name and the region are checked in one place
    except ValueError:
        raise ValueError(f"not an SQS queue URL in {region}: {url!r}") from None
    return arn
