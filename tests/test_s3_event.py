"""sources/s3_event.py: tables for the pure functions, then what moto's server really delivers to a
queue when an object is put in a bucket with a queue notification."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from moto_server import MotoServer

from sources.s3_event import s3_event, s3_records, wanted

REGION = "us-east-1"

# The S3 User Guide's example messages (event message structure page).
DOC_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2014-10-13T15:57:02.089Z",
    "Bucket": "bucketname",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
}
DOC_PUT_RECORD: dict[str, Any] = {
    "eventVersion": "2.1",
    "eventSource": "aws:s3",
    "awsRegion": "us-west-2",
    "eventTime": "1970-01-01T00:00:00.000Z",
    "eventName": "ObjectCreated:Put",
    "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
    "responseElements": {
        "x-amz-request-id": "C3D13FE58DE4C810",
        "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
    },
    "s3": {
        "s3SchemaVersion": "1.0",
        "configurationId": "testConfigRule",
        "bucket": {"name": "mybucket", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                   "arn": "arn:aws:s3:::mybucket"},
        "object": {"key": "HappyFace.jpg", "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                   "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko", "sequencer": "0055AED6DCD90281E5"},
    },
}

# S3 → SNS → SQS: the notification is a string inside SNS's envelope, not ours to unwrap here.
SNS_ENVELOPE = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [DOC_PUT_RECORD]})})


def with_record(**changes: Any) -> dict[str, Any]:
    record = copy.deepcopy(DOC_PUT_RECORD)
    record.update(changes)
    return record


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps({"Records": [DOC_PUT_RECORD]}), [DOC_PUT_RECORD], id="documented-put"),
        pytest.param(json.dumps({"Records": [DOC_PUT_RECORD, with_record(eventName="ObjectRemoved:Delete")]}),
                     [DOC_PUT_RECORD, with_record(eventName="ObjectRemoved:Delete")], id="two-records"),
        pytest.param(json.dumps(DOC_TEST_EVENT), [], id="documented-test-event"),
        pytest.param('{"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-01-01T00:00:00.000Z",'
                     ' "Bucket": "b"}', [], id="moto-test-event"),
        pytest.param('{"Service": "Amazon SNS", "Event": "s3:TestEvent"}', None,
                     id="test-event-other-service"),
        pytest.param('{"Service": "Amazon S3", "Event": "s3:ObjectCreated:Put"}', None,
                     id="not-a-test-event"),
        pytest.param("", None, id="empty-body"),
        pytest.param("hello", None, id="not-json"),
        pytest.param("null", None, id="json-null"),
        pytest.param(json.dumps([DOC_PUT_RECORD]), None, id="bare-list"),
        pytest.param('{"Records": []}', None, id="no-records"),
        pytest.param('{"Records": {"eventSource": "aws:s3"}}', None, id="records-not-list"),
        pytest.param(json.dumps({"Records": [with_record(eventSource="aws:sqs")]}), None, id="other-source"),
        pytest.param(json.dumps({"Records": [DOC_PUT_RECORD, with_record(eventSource="aws:sns")]}), None,
                     id="one-foreign-record"),
        pytest.param(json.dumps({"Records": [DOC_PUT_RECORD, "x"]}), None, id="record-not-object"),
        pytest.param(SNS_ENVELOPE, None, id="sns-envelope"),
        pytest.param('{"version": "0", "source": "aws.s3", "detail-type": "Object Created"}', None,
                     id="eventbridge-event"),
        pytest.param("[" * 100_000, None, id="deeply-nested"),
    ],
)
def test_s3_records(body: str, expected: list[dict[str, Any]] | None) -> None:
    assert s3_records(body) == expected


def record(event_name: str = "ObjectCreated:Put", key: str = "HappyFace.jpg") -> dict[str, Any]:
    changed = with_record(eventName=event_name)
    changed["s3"]["object"]["key"] = key
    return changed


PHOTO = "in/my+photo+%C3%A9t%C3%A9.jpg"  # "in/my photo été.jpg" as S3 writes it into a record
ALL_CREATED = ["s3:ObjectCreated:*"]


@pytest.mark.parametrize(
    ("rec", "events", "prefix", "suffix", "expected"),
    [
        # Event types.
        pytest.param(record(), ALL_CREATED, "", "", True, id="created-wildcard"),
        pytest.param(record("ObjectCreated:CompleteMultipartUpload"), ALL_CREATED, "", "", True,
                     id="wildcard-multipart"),
        pytest.param(record(), ["s3:ObjectCreated:Put"], "", "", True, id="exact"),
        pytest.param(record(), ["s3:ObjectCreated:Post"], "", "", False, id="other-api"),
        pytest.param(record("ObjectRemoved:Delete"), ["s3:ObjectRemoved:Delete"], "", "", True, id="delete"),
        pytest.param(record("ObjectRemoved:DeleteMarkerCreated"), ["s3:ObjectRemoved:Delete"], "", "", False,
                     id="delete-is-not-delete-marker"),
        pytest.param(record("ObjectRemoved:DeleteMarkerCreated"), ["s3:ObjectRemoved:*"], "", "", True,
                     id="removed-wildcard"),
        pytest.param(record(), ["s3:ObjectRemoved:*"], "", "", False, id="created-is-not-removed"),
        pytest.param(record(), ["s3:ObjectRemoved:*", "s3:ObjectCreated:Put"], "", "", True,
                     id="second-pattern"),
        pytest.param(record("ObjectRestore:Completed"), ["s3:ObjectRestore:*"], "", "", True, id="restore"),
        pytest.param(record("ReducedRedundancyLostObject"), ["s3:ReducedRedundancyLostObject"], "", "", True,
                     id="no-subtype"),
        pytest.param(record("ObjectCreatedX:Put"), ALL_CREATED, "", "", False, id="wildcard-is-whole-part"),
        pytest.param(record(), [], "", "", False, id="no-events"),
        pytest.param(record(), ["ObjectCreated:*"], "", "", False, id="pattern-without-s3"),
        pytest.param(record(), ["s3:objectcreated:*"], "", "", False, id="case-sensitive-event"),
        pytest.param(record(), ["s3:*"], "", "", False, id="no-top-level-wildcard"),
        pytest.param(record(), ["s3:ObjectCreated"], "", "", False, id="no-implicit-wildcard"),
        # Key filters, on the decoded key.
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/", "", True, id="prefix"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "out/", "", False, id="other-prefix"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/my photo", "", True, id="prefix-with-space"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/my+photo", "", False, id="plus-is-a-space"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "", "été.jpg", True, id="unicode-suffix"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "", "%C3%A9.jpg", False, id="encoded-suffix-no-match"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/", ".jpg", True, id="prefix-and-suffix"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/", ".png", False, id="prefix-not-suffix"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "", ".JPG", False, id="case-sensitive-key"),
        pytest.param(record(key="a%2Bb.jpg"), ALL_CREATED, "a+b", "", True, id="literal-plus"),
        pytest.param(record(key="in%2Fmy+photo.jpg"), ALL_CREATED, "in/", "", True, id="encoded-slash"),
        pytest.param(record(key=PHOTO), ALL_CREATED, "in/my photo été.jpg", "in/my photo été.jpg", True,
                     id="whole-key-both"),
        pytest.param(record(key="x.jpg"), ["s3:ObjectRemoved:*"], "x", ".jpg", False,
                     id="filters-but-wrong-event"),
        pytest.param({"eventName": "ObjectCreated:Put"}, ALL_CREATED, "", "", False, id="no-object-key"),
        pytest.param({"s3": {"object": {"key": "a"}}}, ALL_CREATED, "", "", False, id="no-event-name"),
    ],
)
def test_wanted(rec: dict[str, Any], events: list[str], prefix: str, suffix: str, expected: bool) -> None:
    before = copy.deepcopy(rec)
    assert wanted(rec, events, prefix, suffix) is expected
    assert rec == before  # the function gets the key exactly as S3 wrote it


def test_s3_event() -> None:
    assert s3_event([DOC_PUT_RECORD]) == {"Records": [DOC_PUT_RECORD]}


# --- Against moto's server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def clients(moto: MotoServer) -> Iterator[tuple[Any, Any]]:
    options = {"endpoint_url": moto.endpoint, "region_name": REGION,
               "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3, sqs = boto3.client("s3", **options), boto3.client("sqs", **options)
    yield s3, sqs
    s3.close()
    sqs.close()


def drain(sqs: Any, url: str, want: int, deadline: float = 8.0) -> list[str]:
    """Receive and delete until ``want`` bodies have arrived or the deadline passes."""
    bodies: list[str] = []
    end = time.monotonic() + deadline
    while len(bodies) < want and time.monotonic() < end:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in response.get("Messages", []):
            bodies.append(msg["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
    return bodies


def test_moto_s3_notification_through_sqs(clients: tuple[Any, Any]) -> None:
    # Given: a bucket that notifies a queue of created objects under in/
    s3, sqs = clients
    suffix = uuid.uuid4().hex[:12]
    bucket, queue = f"b-{suffix}", f"q-{suffix}"
    url = sqs.create_queue(QueueName=queue)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=bucket)
    config = {"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"],
              "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "in/"}]}}}
    s3.put_bucket_notification_configuration(Bucket=bucket,
                                             NotificationConfiguration={"QueueConfigurations": [config]})

    # Then: moto, like S3, sends a test event when the configuration is saved; it has no records
    [test_body] = drain(sqs, url, 1)
    test_event = json.loads(test_body)
    assert test_event["Service"] == "Amazon S3"
    assert test_event["Event"] == "s3:TestEvent"
    assert test_event["Bucket"] == bucket
    # moto sends the documented fields but RequestId and HostId
    assert set(test_event) == {"Service", "Event", "Time", "Bucket"}
    assert s3_records(test_body) == []

    # When: one object is put under in/ and one outside it
    key = "in/my photo été.jpg"
    s3.put_object(Bucket=bucket, Key="out/other.jpg", Body=b"x")
    s3.put_object(Bucket=bucket, Key=key, Body=b"abc")

    # Then: only the one under in/ arrives (moto applies the prefix filter), its key form-encoded
    [body] = drain(sqs, url, 1)
    assert drain(sqs, url, 1, deadline=1.0) == []
    records = s3_records(body)
    assert records is not None
    [rec] = records
    assert rec["eventSource"] == "aws:s3"
    assert rec["eventName"] == "ObjectCreated:Put"
    assert rec["awsRegion"] == REGION
    assert rec["s3"]["bucket"] == {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}
    assert rec["s3"]["object"]["size"] == 3
    # moto encodes the '/' too (S3's own example keeps it); unquote_plus reads both forms
    assert rec["s3"]["object"]["key"] == "in%2Fmy+photo+%C3%A9t%C3%A9.jpg"
    assert unquote_plus(rec["s3"]["object"]["key"]) == key

    # And: our filter agrees with moto's, on the decoded key, leaving the record as delivered
    delivered = copy.deepcopy(rec)
    assert wanted(rec, ["s3:ObjectCreated:*"], "in/", ".jpg")
    assert wanted(rec, ["s3:ObjectCreated:Put"], "in/my photo", "été.jpg")
    assert not wanted(rec, ["s3:ObjectRemoved:*"], "in/", "")
    assert not wanted(rec, ["s3:ObjectCreated:*"], "in/my+photo", "")
    assert rec == delivered
    assert s3_event(records) == {"Records": [delivered]}
