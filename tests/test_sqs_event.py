"""sources/sqs_event.py: tables for the pure functions, then the same functions on what a real SQS
API (moto's server) returns."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto_server import MotoServer

from sources.sqs_event import (
    failed_items,
    fifo_kept,
    parse_sqs_arn,
    queue_arn_of,
    queue_url_of,
    sqs_event,
    sqs_record,
)

REGION = "us-east-1"
ACCOUNT = "123456789012"
ARN = "arn:aws:sqs:us-east-2:123456789012:my-queue"
RECORD_KEYS = [
    "messageId", "receiptHandle", "body", "attributes", "messageAttributes", "md5OfBody",
    "eventSource", "eventSourceARN", "awsRegion",
]

# The first record of the Lambda Developer Guide's standard-queue example, and the message it
# came from as botocore returns it.
DOC_MESSAGE: dict[str, Any] = {
    "MessageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
    "ReceiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
    "MD5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
    "Body": "Test message.",
    "Attributes": {
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185",
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
    },
}
DOC_RECORD: dict[str, Any] = {
    "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
    "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
    "body": "Test message.",
    "attributes": {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185",
    },
    "messageAttributes": {},
    "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
    "eventSource": "aws:sqs",
    "eventSourceARN": "arn:aws:sqs:us-east-2:123456789012:my-queue",
    "awsRegion": "us-east-2",
}
# The documented FIFO example's attributes, in its order.
DOC_FIFO_ATTRIBUTES = [
    ("ApproximateReceiveCount", "1"),
    ("SentTimestamp", "1573251510774"),
    ("SequenceNumber", "18849496460467696128"),
    ("MessageGroupId", "1"),
    ("SenderId", "AIDAIO23YVJENQZJOL4VO"),
    ("MessageDeduplicationId", "1"),
    ("ApproximateFirstReceiveTimestamp", "1573251510774"),
]


def message(attributes: dict[str, str] | None = None, message_attributes: dict[str, Any] | None = None,
            **extra: Any) -> dict[str, Any]:
    msg = {**DOC_MESSAGE, "Attributes": {**DOC_MESSAGE["Attributes"], **(attributes or {})}, **extra}
    if message_attributes is not None:
        msg["MessageAttributes"] = message_attributes
    return msg


def test_record_is_the_documented_example() -> None:
    record = sqs_record(DOC_MESSAGE, ARN, "us-east-2")
    assert record == DOC_RECORD
    assert list(record) == list(DOC_RECORD)
    assert list(record["attributes"]) == list(DOC_RECORD["attributes"])
    assert sqs_event([record]) == {"Records": [DOC_RECORD]}


def test_fifo_attributes_in_documented_order() -> None:
    # Given: the attributes in another order than the docs', as moto and SQS return them
    fifo = dict(reversed(DOC_FIFO_ATTRIBUTES))
    record = sqs_record({**DOC_MESSAGE, "Attributes": fifo}, ARN, "us-east-2")
    assert list(record["attributes"].items()) == DOC_FIFO_ATTRIBUTES


@pytest.mark.parametrize(
    ("msg", "path", "expected"),
    [
        pytest.param(message(), ("attributes",), DOC_RECORD["attributes"], id="standard"),
        pytest.param(
            message({"MessageGroupId": "g", "MessageDeduplicationId": "d", "SequenceNumber": "7"}),
            ("attributes",),
            {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183", "SequenceNumber": "7",
             "MessageGroupId": "g", "SenderId": "AIDAIENQZJOLO23YVJ4VO", "MessageDeduplicationId": "d",
             "ApproximateFirstReceiveTimestamp": "1545082649185"},
            id="fifo",
        ),
        pytest.param(
            message({"AWSTraceHeader": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"}),
            ("attributes", "AWSTraceHeader"), "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
            id="trace-header",
        ),
        pytest.param(message({"SomethingNew": "x"}), ("attributes",), DOC_RECORD["attributes"],
                     id="unknown-attribute-dropped"),
        pytest.param(message(message_attributes={}), ("messageAttributes",), {}, id="no-message-attributes"),
        pytest.param(
            message(message_attributes={"s": {"StringValue": "v", "DataType": "String"}}),
            ("messageAttributes", "s"),
            {"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            id="string",
        ),
        pytest.param(
            message(message_attributes={"n": {"StringValue": "1.5", "DataType": "Number.float"}}),
            ("messageAttributes", "n"),
            {"stringValue": "1.5", "stringListValues": [], "binaryListValues": [],
             "dataType": "Number.float"},
            id="number-custom-label",
        ),
        pytest.param(
            message(message_attributes={"b": {"BinaryValue": b"\x00\xffhi", "DataType": "Binary"}}),
            ("messageAttributes", "b"),
            {"binaryValue": "AP9oaQ==", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
            id="binary-bytes",
        ),
        pytest.param(
            message(message_attributes={"b": {"BinaryValue": "AP9oaQ==", "DataType": "Binary.gz"}}),
            ("messageAttributes", "b", "binaryValue"), "AP9oaQ==", id="binary-already-base64",
        ),
        pytest.param(
            message(message_attributes={"l": {"StringValue": "x", "StringListValues": ["abc", "123"],
                                              "BinaryListValues": [b"0", b"1"], "DataType": "String"}}),
            ("messageAttributes", "l"),
            {"stringValue": "x", "stringListValues": ["abc", "123"], "binaryListValues": ["MA==", "MQ=="],
             "dataType": "String"},
            id="list-values",
        ),
        pytest.param(
            message(message_attributes={"b": {"BinaryValue": b"", "DataType": "Binary"}}),
            ("messageAttributes", "b", "binaryValue"), "", id="empty-binary",
        ),
        pytest.param(
            message(message_attributes={"a": {"StringValue": "1", "DataType": "String"},
                                        "z": {"StringValue": "2", "DataType": "String"}}),
            ("messageAttributes",),
            {"a": {"stringValue": "1", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
             "z": {"stringValue": "2", "stringListValues": [], "binaryListValues": [], "dataType": "String"}},
            id="several",
        ),
        pytest.param(message(MD5OfMessageAttributes="9a8c016ae662af14346c70838c316c42"), (),
                     DOC_RECORD, id="md5-of-attributes-not-in-lambda-record"),
        pytest.param(message(Body=""), ("body",), "", id="empty-body"),
        pytest.param(message(Body='é \u2603 {"a": 1}'), ("body",), 'é \u2603 {"a": 1}', id="unicode-body"),
        pytest.param(message(), ("eventSourceARN",), ARN, id="arn"),
    ],
)
def test_sqs_record(msg: dict[str, Any], path: tuple[str, ...], expected: Any) -> None:
    value: Any = sqs_record(msg, ARN, "us-east-2")
    for key in path:
        value = value[key]
    assert value == expected
    if isinstance(expected, dict):
        assert list(value) == list(expected)


def test_record_does_not_change_the_message() -> None:
    msg = message(message_attributes={"b": {"BinaryValue": b"x", "DataType": "Binary"}})
    before = json.dumps(msg, default=repr, sort_keys=True)
    sqs_record(msg, ARN, "us-east-2")
    assert json.dumps(msg, default=repr, sort_keys=True) == before


IDS = ["id1", "id2", "id3"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # All succeeded: the documented empty and null cases.
        pytest.param(b"null", set(), id="null-response"),
        pytest.param(b" null\n", set(), id="null-with-whitespace"),
        pytest.param(b"{}", set(), id="empty-response"),
        pytest.param(b"", set(), id="no-body"),
        pytest.param(b'{"batchItemFailures": []}', set(), id="empty-list"),
        pytest.param(b'{"batchItemFailures": null}', set(), id="null-list"),
        pytest.param(b'{"statusCode": 200}', set(), id="no-list-key"),
        # Partial failure.
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id2"}]}', {"id2"}, id="one"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id1"}, {"itemIdentifier": "id3"}]}',
                     {"id1", "id3"}, id="two"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id2"}, {"itemIdentifier": "id2"}]}',
                     {"id2"}, id="duplicate"),
        pytest.param(json.dumps({"batchItemFailures": [{"itemIdentifier": i} for i in IDS]}).encode(),
                     set(IDS), id="all"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id2", "why": "x"}], "other": 1}',
                     {"id2"}, id="extra-keys-ignored"),
        # The whole batch fails.
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": ""}]}', None, id="empty-identifier"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": null}]}', None, id="null-identifier"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifer": "id2"}]}', None, id="bad-key-name"),
        pytest.param(b'{"batchItemFailures": [{"ItemIdentifier": "id2"}]}', None, id="key-name-case"),
        pytest.param(b'{"batchItemFailures": [{}]}', None, id="missing-identifier"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id9"}]}', None, id="unknown-id"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": "id1"}, {"itemIdentifier": "nope"}]}',
                     None, id="one-unknown-among-known"),
        pytest.param(b'{"batchItemFailures": [{"itemIdentifier": 2}]}', None, id="identifier-not-string"),
        pytest.param(b'{"batchItemFailures": ["id2"]}', None, id="item-not-object"),
        pytest.param(b'{"batchItemFailures": "id2"}', None, id="list-not-list"),
        pytest.param(b'{"batchItemFailures": {"itemIdentifier": "id2"}}', None, id="list-is-object"),
        pytest.param(b"not json", None, id="invalid-json"),
        pytest.param(b'{"batchItemFailures": [', None, id="truncated-json"),
        pytest.param(b'"ok"', None, id="string-response"),
        pytest.param(b"[]", None, id="array-response"),
        pytest.param(b"42", None, id="number-response"),
        pytest.param(b"NaN", None, id="nan-is-not-json"),
        pytest.param(b"\xff\xfe\x00", None, id="not-utf8"),
        pytest.param(b"[" * 100_000, None, id="deeply-nested"),
    ],
)
def test_failed_items(payload: bytes, expected: set[str] | None) -> None:
    assert failed_items(payload, IDS) == expected


@pytest.mark.parametrize(
    ("ordered", "failed", "kept"),
    [
        pytest.param([("a", "g"), ("b", "g"), ("c", "g")], set(), set(), id="none-failed"),
        pytest.param([("a", "g"), ("b", "g"), ("c", "g")], {"b"}, {"b", "c"}, id="rest-of-group-kept"),
        pytest.param([("a", "g"), ("b", "g"), ("c", "g")], {"a"}, {"a", "b", "c"}, id="first-failed"),
        pytest.param([("a", "g"), ("b", "g"), ("c", "g")], {"c"}, {"c"}, id="last-failed"),
        pytest.param([("a", "g"), ("b", "g"), ("c", "g")], {"b", "c"}, {"b", "c"}, id="function-complied"),
        pytest.param([("a", "g1"), ("b", "g2"), ("c", "g1"), ("d", "g2")], {"a"}, {"a", "c"},
                     id="other-group-deleted"),
        pytest.param([("a", "g1"), ("b", "g2"), ("c", "g1"), ("d", "g2")], {"c", "b"}, {"b", "c", "d"},
                     id="two-groups"),
        pytest.param([], set(), set(), id="empty"),
    ],
)
def test_fifo_kept(ordered: list[tuple[str, str]], failed: set[str], kept: set[str]) -> None:
    assert fifo_kept(ordered, failed) == kept


@pytest.mark.parametrize(
    ("arn", "parsed"),
    [
        pytest.param(ARN, ("us-east-2", ACCOUNT, "my-queue"), id="standard"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:fifo.fifo", ("us-east-2", ACCOUNT, "fifo.fifo"),
                     id="fifo"),
        pytest.param("arn:aws:sqs:eu-central-1:000000000000:A_b-9", ("eu-central-1", "000000000000", "A_b-9"),
                     id="name-characters"),
        pytest.param(f"arn:aws:sqs:us-east-1:123456789012:{'q' * 80}", ("us-east-1", ACCOUNT, "q" * 80),
                     id="80-characters"),
        pytest.param(f"arn:aws:sqs:us-east-1:123456789012:{'q' * 75}.fifo",
                     ("us-east-1", ACCOUNT, "q" * 75 + ".fifo"), id="80-characters-fifo"),
        pytest.param("arn:aws-cn:sqs:cn-north-1:123456789012:q", ("cn-north-1", ACCOUNT, "q"), id="china"),
        pytest.param("arn:aws-us-gov:sqs:us-gov-west-1:123456789012:q", ("us-gov-west-1", ACCOUNT, "q"),
                     id="govcloud"),
        pytest.param("arn:aws:sqs:us-east-1:123456789012:q", ("us-east-1", ACCOUNT, "q"), id="one-char"),
    ],
)
def test_parse_sqs_arn(arn: str, parsed: tuple[str, str, str]) -> None:
    assert parse_sqs_arn(arn) == parsed


@pytest.mark.parametrize(
    "arn",
    [
        pytest.param("", id="empty"),
        pytest.param("arn:aws:sns:us-east-2:123456789012:my-queue", id="other-service"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:", id="no-name"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012", id="no-name-segment"),
        pytest.param(f"arn:aws:sqs:us-east-1:123456789012:{'q' * 81}", id="81-characters"),
        pytest.param(f"arn:aws:sqs:us-east-1:123456789012:{'q' * 76}.fifo", id="81-characters-fifo"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:my.queue", id="dot-in-name"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:q.fifo.fifo", id="double-suffix"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:.fifo", id="suffix-only"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:my queue", id="space-in-name"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:a:b", id="extra-segment"),
        pytest.param("arn:aws:sqs:us-east-2:12345678901:q", id="short-account"),
        pytest.param("arn:aws:sqs:us-east-2:12345678901x:q", id="account-not-digits"),
        pytest.param("arn:aws:sqs::123456789012:q", id="no-region"),
        pytest.param("arn:aws:sqs:US-EAST-2:123456789012:q", id="region-case"),
        pytest.param("arn:other:sqs:us-east-2:123456789012:q", id="unknown-partition"),
        pytest.param("ARN:aws:sqs:us-east-2:123456789012:q", id="prefix-case"),
        pytest.param(f"{ARN}\n", id="trailing-newline"),
        pytest.param(f" {ARN}", id="leading-space"),
        pytest.param("https://sqs.us-east-2.amazonaws.com/123456789012/my-queue", id="a-url"),
    ],
)
def test_parse_sqs_arn_rejects(arn: str) -> None:
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        parse_sqs_arn(arn)


@pytest.mark.parametrize(
    ("arn", "endpoint", "url"),
    [
        pytest.param(ARN, None, "https://sqs.us-east-2.amazonaws.com/123456789012/my-queue", id="aws"),
        pytest.param("arn:aws-cn:sqs:cn-north-1:123456789012:q", None,
                     "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", id="china"),
        pytest.param(ARN, "http://127.0.0.1:5000", "http://127.0.0.1:5000/123456789012/my-queue", id="local"),
        pytest.param(ARN, "http://127.0.0.1:5000/", "http://127.0.0.1:5000/123456789012/my-queue",
                     id="local-trailing-slash"),
        pytest.param("arn:aws:sqs:us-east-2:123456789012:f.fifo", "https://sqs.example",
                     "https://sqs.example/123456789012/f.fifo", id="fifo"),
    ],
)
def test_queue_url_of(arn: str, endpoint: str | None, url: str) -> None:
    assert queue_url_of(arn, endpoint) == url
    assert queue_arn_of(url, parse_sqs_arn(arn)[0]) == arn


def test_queue_url_of_rejects_a_bad_arn() -> None:
    with pytest.raises(ValueError, match="not an SQS queue ARN"):
        queue_url_of("arn:aws:sqs:us-east-2:123456789012:bad.name", "http://127.0.0.1:5000")


@pytest.mark.parametrize(
    ("url", "region", "arn"),
    [
        pytest.param("http://127.0.0.1:5000/123456789012/q1", "us-east-1",
                     "arn:aws:sqs:us-east-1:123456789012:q1", id="moto"),
        pytest.param("https://sqs.us-east-2.amazonaws.com/123456789012/my-queue", "us-east-2", ARN, id="aws"),
        pytest.param("http://localhost/123456789012/f.fifo", "eu-west-1",
                     "arn:aws:sqs:eu-west-1:123456789012:f.fifo", id="fifo-no-port"),
        pytest.param("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q", "cn-north-1",
                     "arn:aws-cn:sqs:cn-north-1:123456789012:q", id="china"),
    ],
)
def test_queue_arn_of(url: str, region: str, arn: str) -> None:
    assert queue_arn_of(url, region) == arn


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("ftp://127.0.0.1/123456789012/q", id="scheme"),
        pytest.param("127.0.0.1:5000/123456789012/q", id="no-scheme"),
        pytest.param("http:///123456789012/q", id="no-host"),
        pytest.param("http://127.0.0.1:port/123456789012/q", id="bad-port"),
        pytest.param("http://127.0.0.1/123456789012", id="no-name"),
        pytest.param("http://127.0.0.1/123456789012/", id="empty-name"),
        pytest.param("http://127.0.0.1/123456789012/q/extra", id="extra-segment"),
        pytest.param("http://127.0.0.1/12345/q", id="bad-account"),
        pytest.param("http://127.0.0.1/123456789012/bad.name", id="bad-name"),
        pytest.param("http://127.0.0.1/123456789012/q?Action=x", id="query"),
        pytest.param("http://127.0.0.1/123456789012/q#f", id="fragment"),
    ],
)
def test_queue_arn_of_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="not an SQS queue URL"):
        queue_arn_of(url, REGION)


def test_queue_arn_of_rejects_a_bad_region() -> None:
    with pytest.raises(ValueError, match="not an SQS queue URL"):
        queue_arn_of("http://127.0.0.1/123456789012/q", "nowhere")


# --- Against moto's server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def sqs(moto: MotoServer) -> Iterator[Any]:
    client = boto3.client("sqs", endpoint_url=moto.endpoint, region_name=REGION,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    yield client
    client.close()


def new_queue(sqs: Any, fifo: bool = False) -> tuple[str, str]:
    name = f"q-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if fifo else {})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive(sqs: Any, url: str, count: int, visibility: int | None = None) -> list[dict[str, Any]]:
    extra = {} if visibility is None else {"VisibilityTimeout": visibility}
    response = sqs.receive_message(
        QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"], MaxNumberOfMessages=count, WaitTimeSeconds=2, **extra,
    )
    return response.get("Messages", [])


def test_moto_message_as_record(sqs: Any) -> None:
    # Given: a message with a string, a number and a binary attribute, and a trace header
    url, arn = new_queue(sqs)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    sent = sqs.send_message(
        QueueUrl=url, MessageBody='{"hello": "wörld"}',
        MessageAttributes={
            "colour": {"DataType": "String", "StringValue": "blue"},
            "count": {"DataType": "Number", "StringValue": "42"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xfe"},
        },
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": trace}},
    )
    before = time.time() * 1000

    # When: it is received with every attribute and shaped as Lambda would
    [msg] = receive(sqs, url, 1)
    record = sqs_record(msg, arn, REGION)

    # Then: the record has Lambda's keys, types and values, and survives JSON
    assert list(record) == RECORD_KEYS
    assert record["messageId"] == sent["MessageId"] == msg["MessageId"]
    assert record["receiptHandle"] == msg["ReceiptHandle"]
    assert record["body"] == '{"hello": "wörld"}'
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest() == sent["MD5OfMessageBody"]
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == ("aws:sqs", arn, REGION)
    attributes = record["attributes"]
    assert list(attributes) == ["ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                "ApproximateFirstReceiveTimestamp", "AWSTraceHeader"]
    assert all(isinstance(value, str) for value in attributes.values())
    assert attributes["ApproximateReceiveCount"] == "1"
    assert attributes["AWSTraceHeader"] == trace
    assert int(attributes["SentTimestamp"]) <= int(attributes["ApproximateFirstReceiveTimestamp"])
    assert abs(int(attributes["SentTimestamp"]) - before) < 60_000
    no_lists = {"stringListValues": [], "binaryListValues": []}
    assert record["messageAttributes"] == {
        "colour": {"stringValue": "blue", **no_lists, "dataType": "String"},
        "count": {"stringValue": "42", **no_lists, "dataType": "Number"},
        "blob": {"binaryValue": "AAH+", **no_lists, "dataType": "Binary"},
    }
    assert [list(value) for value in record["messageAttributes"].values()] == [
        ["stringValue", "stringListValues", "binaryListValues", "dataType"],
        ["stringValue", "stringListValues", "binaryListValues", "dataType"],
        ["binaryValue", "stringListValues", "binaryListValues", "dataType"],
    ]
    assert base64.b64decode(record["messageAttributes"]["blob"]["binaryValue"]) == b"\x00\x01\xfe"
    assert "md5OfMessageAttributes" not in record
    assert json.loads(json.dumps(sqs_event([record]))) == {"Records": [record]}


def test_moto_fifo_messages_as_records(sqs: Any) -> None:
    url, arn = new_queue(sqs, fifo=True)
    for n in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}", MessageGroupId="g1",
                         MessageDeduplicationId=f"d{n}")

    records = [sqs_record(msg, arn, REGION) for msg in receive(sqs, url, 10)]

    assert [record["body"] for record in records] == ["m0", "m1"]
    for n, record in enumerate(records):
        assert list(record["attributes"]) == [name for name, _ in DOC_FIFO_ATTRIBUTES]
        assert record["attributes"]["MessageGroupId"] == "g1"
        assert record["attributes"]["MessageDeduplicationId"] == f"d{n}"
        assert record["attributes"]["SequenceNumber"].isdigit()
        assert record["eventSourceARN"].endswith(".fifo")
    # SQS's sequence numbers grow within a group; moto's are random, so only their being two is checked.
    assert records[0]["attributes"]["SequenceNumber"] != records[1]["attributes"]["SequenceNumber"]


def test_moto_queue_url_and_arn_agree(moto: MotoServer, sqs: Any) -> None:
    url, arn = new_queue(sqs)
    assert queue_url_of(arn, moto.endpoint) == url
    assert queue_arn_of(url, REGION) == arn


def test_moto_partial_batch_keeps_only_the_failures(sqs: Any) -> None:
    # Given: a batch of three, whose function reports the second as failed
    url, arn = new_queue(sqs)
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}")
    batch = receive(sqs, url, 10, visibility=1)
    assert len(batch) == 3
    ids = [msg["MessageId"] for msg in batch]
    payload = json.dumps({"batchItemFailures": [{"itemIdentifier": ids[1]}]}).encode()

    # When: the poller deletes every message that failed_items does not keep
    kept = failed_items(payload, ids)
    assert kept == {ids[1]}
    for msg in batch:
        if msg["MessageId"] not in kept:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])

    # Then: once the visibility timeout passes, only the failed message comes back
    time.sleep(1.1)
    again = receive(sqs, url, 10)
    assert [msg["MessageId"] for msg in again] == [ids[1]]
    assert sqs_record(again[0], arn, REGION)["attributes"]["ApproximateReceiveCount"] == "2"


def test_moto_server_restarts_on_the_same_port_empty(moto: MotoServer, sqs: Any) -> None:
    # Given: a queue on the running server
    endpoint = moto.endpoint
    new_queue(sqs)

    # When: the server goes away, then comes back
    moto.stop()
    assert not moto.answers()
    moto.start()

    # Then: the endpoint is the same and, moto keeping state in memory, the queue is gone
    assert moto.endpoint == endpoint
    assert sqs.list_queues().get("QueueUrls", []) == []
    new_queue(sqs)
    moto.reset()
    assert sqs.list_queues().get("QueueUrls", []) == []
