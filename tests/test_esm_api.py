"""The Lambda API's event source mappings (router/api/esm.py): the pure reading of requests, by
tables, then end to end: boto3 and the AWS CLI against the real daemon, polling moto's SQS.

The function prints each event it gets as one ``EVENT {json}`` line, with its own name, which the
daemon logs; the metering file says which source invoked it; the queue says what was deleted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import Daemon, function_toml
from moto_server import MotoServer, aws_section, free_port, until

from router.api import esm
from router.api.body import Refusal
from router.config import ServerConfig
from sources.mappings import Mapping

ACCOUNT = "123456789012"
DAEMON_ACCOUNT = "000000000000"  # [server].account_id's default, in the function ARNs
HANDLER = """
import json

def handler(event, context):
    print("EVENT " + json.dumps({"function": context.function_name, "event": event}))
"""
FILES = {"functions/esmfn.py": HANDLER}
ARN_CONSTRAINT = ("Member must satisfy regular expression pattern: " + esm.ARN_PATTERN)


def arn(name: str) -> str:
    return f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


def function_arn(name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{DAEMON_ACCOUNT}:function:{name}"


# --- pure: reading requests ----------------------------------------------------------------------

BASE = {"FunctionName": "f", "EventSourceArn": arn("q")}
FILTER = json.dumps({"body": {"kind": ["image"]}})


def created(body: dict[str, Any]) -> tuple[str, Mapping]:
    return esm.read_create(body, mapping_uuid="u-1", endpoint_url="http://127.0.0.1:5000", now=7.0)


def refusal(call: Callable[[], object]) -> Refusal:
    with pytest.raises(Refusal) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(("body", "expected"), [
    (BASE, {"batch_size": 10, "window_s": 0, "enabled": True, "filters": [],
            "report_failures": False, "concurrency": None}),
    ({**BASE, "BatchSize": 100, "MaximumBatchingWindowInSeconds": 5, "Enabled": False,
      "FilterCriteria": {"Filters": [{"Pattern": FILTER}]},
      "FunctionResponseTypes": ["ReportBatchItemFailures"], "ScalingConfig": {"MaximumConcurrency": 5}},
     {"batch_size": 100, "window_s": 5, "enabled": False, "filters": [FILTER],
      "report_failures": True, "concurrency": 5}),
    # Empty values ask for nothing: no filters, no maximum concurrency, no response types.
    ({**BASE, "FilterCriteria": {}, "ScalingConfig": {}, "FunctionResponseTypes": []},
     {"filters": [], "concurrency": None, "report_failures": False}),
    # Other parameters at Lambda's defaults are accepted, as a tool that sends them all would.
    ({**BASE, "ParallelizationFactor": 1, "MaximumRetryAttempts": -1, "MaximumRecordAgeInSeconds": -1,
      "BisectBatchOnFunctionError": False, "TumblingWindowInSeconds": 0, "Tags": {}, "KMSKeyArn": "",
      "StartingPosition": None}, {"batch_size": 10}),
    ({**BASE, "BatchSize": 10000, "MaximumBatchingWindowInSeconds": 300}, {"batch_size": 10000}),
    ({**BASE, "EventSourceArn": arn("q.fifo"), "BatchSize": 10}, {"batch_size": 10}),
])
def test_read_create(body: dict[str, Any], expected: dict[str, Any]) -> None:
    text, m = created(body)
    assert text == body["FunctionName"]
    assert {k: getattr(m, k) for k in expected} == expected
    assert (m.uuid, m.event_source_arn, m.region, m.last_modified) == ("u-1", body["EventSourceArn"],
                                                                      "us-east-1", 7.0)
    name = body["EventSourceArn"].rpartition(":")[2]
    assert m.queue_url == f"http://127.0.0.1:5000/{ACCOUNT}/{name}"
    assert not m.from_config and m.endpoint_url == ""  # polls [aws]'s endpoint, wherever it is


def test_queue_url_at_sqs_itself() -> None:
    _, m = esm.read_create(BASE, mapping_uuid="u", endpoint_url="", now=0)
    assert m.queue_url == f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/q"


V = "1 validation error detected: "
CREATE_REFUSALS = [
    ({"EventSourceArn": arn("q")}, "ValidationException",
     V + "Value null at 'functionName' failed to satisfy constraint: Member must not be null"),
    ({**BASE, "FunctionName": "a/b"}, "ValidationException",
     V + "Value 'a/b' at 'functionName' failed to satisfy constraint: Member must satisfy regular "
     "expression pattern: " + esm.FUNCTION_NAME_PATTERN),
    ({**BASE, "EventSourceArn": "queue"}, "ValidationException",
     V + f"Value 'queue' at 'eventSourceArn' failed to satisfy constraint: {ARN_CONSTRAINT}"),
    ({**BASE, "BatchSize": 0}, "ValidationException",
     V + "Value '0' at 'batchSize' failed to satisfy constraint: Member must have value greater "
     "than or equal to 1"),
    ({**BASE, "BatchSize": 10001}, "ValidationException",
     V + "Value '10001' at 'batchSize' failed to satisfy constraint: Member must have value less "
     "than or equal to 10000"),
    ({**BASE, "BatchSize": 0, "MaximumBatchingWindowInSeconds": 301}, "ValidationException",
     "2 validation errors detected: Value '0' at 'batchSize' failed to satisfy constraint: Member "
     "must have value greater than or equal to 1; Value '301' at 'maximumBatchingWindowInSeconds' "
     "failed to satisfy constraint: Member must have value less than or equal to 300"),
    ({**BASE, "ScalingConfig": {"MaximumConcurrency": 1}}, "ValidationException",
     V + "Value '1' at 'scalingConfig.maximumConcurrency' failed to satisfy constraint: Member must "
     "have value greater than or equal to 2"),
    ({**BASE, "FunctionResponseTypes": ["Nope"]}, "ValidationException",
     V + "Value '[Nope]' at 'functionResponseTypes' failed to satisfy constraint: Member must "
     "satisfy constraint: [Member must satisfy enum value set: [ReportBatchItemFailures]]"),
    ({**BASE, "BatchSize": "ten"}, "InvalidParameterValueException",
     'BatchSize: expected an integer, got "ten"'),
    ({**BASE, "BatchSize": True}, "InvalidParameterValueException",
     "BatchSize: expected an integer, got true"),
    ({**BASE, "Enabled": "yes"}, "InvalidParameterValueException",
     'Enabled: expected true or false, got "yes"'),
    ({**BASE, "BatchSize": 100}, "InvalidParameterValueException",
     "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"),
    ({**BASE, "EventSourceArn": arn("q.fifo"), "BatchSize": 11, "MaximumBatchingWindowInSeconds": 1},
     "InvalidParameterValueException", "BatchSize: a FIFO queue's batch size is at most 10, got 11"),
    ({**BASE, "EventSourceArn": arn("q.fifo"), "MaximumBatchingWindowInSeconds": 1},
     "InvalidParameterValueException",
     "MaximumBatchingWindowInSeconds: batching windows are not supported for FIFO queues"),
    ({**BASE, "EventSourceArn": f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/s"},
     "InvalidParameterValueException",
     f"Unsupported event source arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/s: Headwater maps "
     "Amazon SQS queues only, not kinesis"),
    ({**BASE, "EventSourceArn": f"arn:aws:sqs::{ACCOUNT}:q"}, "InvalidParameterValueException",
     f"EventSourceArn: arn:aws:sqs::{ACCOUNT}:q is not an SQS queue's ARN "
     "(arn:aws:sqs:REGION:ACCOUNT:NAME)"),
    ({"FunctionName": "f"}, "InvalidParameterValueException",
     "Unrecognized event source: Headwater's event source mappings read SQS queues, named by "
     "EventSourceArn"),
    ({**BASE, "StartingPosition": "LATEST"}, "InvalidParameterValueException",
     "StartingPosition is not valid for SQS event sources."),
    ({**BASE, "ParallelizationFactor": 2, "Tags": {"a": "b"}}, "InvalidParameterValueException",
     "Not supported by Headwater: ParallelizationFactor, Tags (an event source mapping of an SQS "
     "queue takes BatchSize, Enabled, EventSourceArn, FilterCriteria, FunctionName, "
     "FunctionResponseTypes, MaximumBatchingWindowInSeconds, ScalingConfig)"),
    ({**BASE, "Bogus": 1}, "InvalidParameterValueException", "Unknown parameter(s): Bogus"),
    ({**BASE, "FilterCriteria": {"Filters": [{"Pattern": "{"}]}}, "InvalidParameterValueException",
     "FilterCriteria: Filters[0].Pattern: not valid JSON"),
    ({**BASE, "FilterCriteria": {"Filters": [{"Pattern": "{}"}]}}, "InvalidParameterValueException",
     "FilterCriteria: Filters[0].Pattern: empty objects are not allowed"),
    ({**BASE, "FilterCriteria": [FILTER]}, "InvalidParameterValueException",
     "FilterCriteria: expected an object with Filters"),
    ({**BASE, "ScalingConfig": {"MaximumConcurrency": 5, "Other": 1}},
     "InvalidParameterValueException", "ScalingConfig: expected an object with MaximumConcurrency"),
]


@pytest.mark.parametrize(("body", "code", "message"), CREATE_REFUSALS)
def test_read_create_refusals(body: dict[str, Any], code: str, message: str) -> None:
    refused = refusal(lambda: created(body))
    assert (refused.status, refused.code) == (400, code)
    assert refused.message.startswith(message), refused.message


MAPPING = Mapping(uuid="u", function="f", event_source_arn=arn("q"), queue_url="http://x/1/q",
                  batch_size=20, window_s=2, filters=[FILTER], report_failures=True, concurrency=4)


@pytest.mark.parametrize(("body", "function", "expected"), [
    ({}, None, {"batch_size": 20, "window_s": 2, "enabled": True}),
    ({"Enabled": False, "FunctionName": "g"}, "g", {"enabled": False, "batch_size": 20}),
    ({"BatchSize": 5, "MaximumBatchingWindowInSeconds": 0}, None, {"batch_size": 5, "window_s": 0}),
    # Empty values remove what was set.
    ({"FilterCriteria": {}, "ScalingConfig": {}, "FunctionResponseTypes": []}, None,
     {"filters": [], "concurrency": None, "report_failures": False}),
    ({"ScalingConfig": {"MaximumConcurrency": 1000}}, None, {"concurrency": 1000}),
])
def test_read_update(body: dict[str, Any], function: str | None, expected: dict[str, Any]) -> None:
    text, m = esm.read_update(body, MAPPING, 9.0)
    assert text == function
    assert {k: getattr(m, k) for k in expected} == expected
    assert m.last_modified == 9.0 and m.uuid == "u" and m.event_source_arn == arn("q")
    assert MAPPING.batch_size == 20  # the stored mapping is untouched until the update is kept


@pytest.mark.parametrize(("body", "code", "message"), [
    # The rules hold for the mapping as updated: a window of 0 beside the stored batch of 20.
    ({"MaximumBatchingWindowInSeconds": 0}, "InvalidParameterValueException",
     "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"),
    ({"EventSourceArn": arn("other")}, "InvalidParameterValueException",
     "Unknown parameter(s): EventSourceArn"),
    ({"BatchSize": 10001}, "ValidationException", V + "Value '10001' at 'batchSize'"),
    ({"FunctionName": ""}, "ValidationException", V + "Value '' at 'functionName'"),
])
def test_read_update_refusals(body: dict[str, Any], code: str, message: str) -> None:
    refused = refusal(lambda: esm.read_update(body, MAPPING, 0))
    assert (refused.status, refused.code) == (400, code)
    assert refused.message.startswith(message), refused.message


@pytest.mark.parametrize(("problem", "said"), [
    ("batch_window_s: Maximum batch window in seconds must be greater than 0 if maximum batch size "
     "is greater than 10",
     "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"),
    ("batch_size: a FIFO queue's batch size is at most 10, got 11",
     "BatchSize: a FIFO queue's batch size is at most 10, got 11"),
])
def test_lambda_words(problem: str, said: str) -> None:
    assert esm.lambda_words(problem) == said


def mappings(*specs: tuple[str, str, str]) -> list[Mapping]:
    return [Mapping(uuid=u, function=f, event_source_arn=arn(q), queue_url="") for u, f, q in specs]


LISTED = mappings(("c", "f", "q1"), ("a", "f", "q2"), ("b", "g", "q1"), ("d", "f", "q1"))


@pytest.mark.parametrize(("function", "queue", "marker", "size", "uuids", "next_marker"), [
    (None, None, "", 100, ["a", "b", "c", "d"], None),
    ("f", None, "", 100, ["a", "c", "d"], None),
    (None, arn("q1"), "", 100, ["b", "c", "d"], None),
    ("f", arn("q1"), "", 100, ["c", "d"], None),
    ("h", None, "", 100, [], None),
    (None, None, "", 2, ["a", "b"], "b"),
    (None, None, "b", 2, ["c", "d"], None),
    (None, None, "b", 1, ["c"], "c"),
    # A marker whose mapping was deleted meanwhile still continues after it.
    (None, None, "bb", 100, ["c", "d"], None),
])
def test_select(function: str | None, queue: str | None, marker: str, size: int, uuids: list[str],
                next_marker: str | None) -> None:
    page, following = esm.select(LISTED, function, queue, marker, size)
    assert ([m.uuid for m in page], following) == (uuids, next_marker)


@pytest.mark.parametrize(("query", "expected"), [
    ({}, (None, None, "", 100)),
    ({"FunctionName": "f", "EventSourceArn": arn("q"), "Marker": "m", "MaxItems": "5"},
     ("f", arn("q"), "m", 5)),
    ({"FunctionName": function_arn("f")}, ("f", None, "", 100)),
    ({"FunctionName": function_arn("f") + ":$LATEST"}, ("f", None, "", 100)),
    # A version Headwater does not have selects nothing.
    ({"FunctionName": "f:PROD"}, ("f:PROD", None, "", 100)),
    ({"MaxItems": "10000"}, (None, None, "", 100)),  # Lambda's page is at most 100 anyway
])
def test_read_list_query(query: dict[str, str], expected: tuple[Any, ...]) -> None:
    assert esm.read_list_query(query) == expected


@pytest.mark.parametrize(("query", "code", "message"), [
    ({"MaxItems": "0"}, "ValidationException",
     V + "Value '0' at 'maxItems' failed to satisfy constraint: Member must have value greater than "
     "or equal to 1"),
    ({"MaxItems": "x"}, "InvalidParameterValueException", 'MaxItems: expected an integer, got "x"'),
    ({"EventSourceArn": "q"}, "ValidationException",
     V + f"Value 'q' at 'eventSourceArn' failed to satisfy constraint: {ARN_CONSTRAINT}"),
])
def test_read_list_query_refusals(query: dict[str, str], code: str, message: str) -> None:
    refused = refusal(lambda: esm.read_list_query(query))
    assert (refused.status, refused.code, refused.message) == (400, code, message)


def test_configuration_has_lambdas_fields() -> None:
    server = ServerConfig(region="eu-west-1", account_id="111122223333")
    m = msgspec.structs.replace(MAPPING, last_modified=1700000000.123456)
    assert esm.configuration(m, server, "Enabled", "OK") == {
        "UUID": "u", "BatchSize": 20, "MaximumBatchingWindowInSeconds": 2, "EventSourceArn": arn("q"),
        "FilterCriteria": {"Filters": [{"Pattern": FILTER}]},
        "FunctionArn": "arn:aws:lambda:eu-west-1:111122223333:function:f",
        "LastModified": 1700000000.123, "LastProcessingResult": "OK", "State": "Enabled",
        "StateTransitionReason": "USER_INITIATED", "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": 4},
        "EventSourceMappingArn": "arn:aws:lambda:eu-west-1:111122223333:event-source-mapping:u"}
    # What is not set is not reported (Lambda's own omits FilterCriteria and ScalingConfig then).
    bare = esm.configuration(msgspec.structs.replace(m, filters=[], concurrency=None,
                                                     report_failures=False), server, "Disabled", "")
    assert "FilterCriteria" not in bare and "ScalingConfig" not in bare
    assert bare["FunctionResponseTypes"] == []


def test_duplicate_of() -> None:
    existing = mappings(("a", "f", "q1"), ("b", "g", "q2"))
    assert esm.duplicate_of(existing, mappings(("new", "f", "q1"))[0]) is existing[0]
    assert esm.duplicate_of(existing, mappings(("new", "f", "q2"))[0]) is None
    assert esm.duplicate_of(existing, mappings(("a", "f", "q1"))[0]) is None  # itself, updated


# --- end to end ----------------------------------------------------------------------------------


def events(daemon: Daemon) -> list[dict[str, Any]]:
    return daemon.printed("EVENT")


def delivered(daemon: Daemon, queue: str) -> list[tuple[str, str]]:
    """(function, body) of every record of ``queue`` delivered so far."""
    return [(e["function"], r["body"]) for e in events(daemon) for r in e["event"]["Records"]
            if r["eventSourceARN"] == arn(queue)]


def counts(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def lambda_client(url: str, *, validate: bool = True, key: str = "testing",
                  secret: str = "testing") -> Any:
    return boto3.client("lambda", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1},
                                      parameter_validation=validate))


def error_of(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"]["Message"])


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="module")
def sqs(moto: MotoServer) -> Iterator[Any]:
    client = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    yield client
    client.close()


def queue(sqs: Any, name: str, visibility: int = 30) -> str:
    return sqs.create_queue(QueueName=name,
                            Attributes={"VisibilityTimeout": str(visibility)})["QueueUrl"]


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> Daemon:
    """One daemon for the API tests: functions esm and other (timeout 3 s), long (30 s), and
    configured, whose config.toml trigger polls queue cfg."""
    cfg = queue(sqs, "cfg")
    trigger = f'[[functions.triggers]]\ntype = "sqs"\nqueue_url = "{cfg}"\n'
    return make_daemon(aws_section(moto.endpoint)
                       + function_toml("esm", "esmfn.handler")
                       + function_toml("other", "esmfn.handler")
                       + function_toml("long", "esmfn.handler", timeout_s=30)
                       + function_toml("configured", "esmfn.handler") + trigger, FILES)


@pytest.fixture(scope="module")
def lam(daemon: Daemon) -> Iterator[Any]:
    client = lambda_client(daemon.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def loose(daemon: Daemon) -> Iterator[Any]:
    """A client that sends what boto3 would refuse itself, to see the daemon refuse it."""
    client = lambda_client(daemon.url, validate=False)
    yield client
    client.close()


def test_create_delivers_sqs_messages_in_lambdas_shape(daemon: Daemon, lam: Any, sqs: Any) -> None:
    url = queue(sqs, "deliver")
    before = time.time()
    created = lam.create_event_source_mapping(FunctionName="esm", EventSourceArn=arn("deliver"))
    try:
        assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert created["State"] == "Creating"
        assert created["FunctionArn"] == function_arn("esm")
        assert created["EventSourceArn"] == arn("deliver")
        assert (created["BatchSize"], created["MaximumBatchingWindowInSeconds"]) == (10, 0)
        assert created["StateTransitionReason"] == "USER_INITIATED"
        assert created["FunctionResponseTypes"] == []
        assert created["LastProcessingResult"] == "No records processed"
        assert created["EventSourceMappingArn"] == (
            f"arn:aws:lambda:us-east-1:{DAEMON_ACCOUNT}:event-source-mapping:{created['UUID']}")
        assert "ScalingConfig" not in created and "FilterCriteria" not in created
        assert before - 1 <= created["LastModified"].timestamp() <= time.time() + 1
        uuid.UUID(created["UUID"])

        for i in range(5):
            sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
        until(lambda: len(delivered(daemon, "deliver")) >= 5, what="5 messages delivered")
        assert sorted(delivered(daemon, "deliver")) == [("esm", f"m{i}") for i in range(5)]
        record = next(r for e in events(daemon) for r in e["event"]["Records"]
                      if r["eventSourceARN"] == arn("deliver"))
        assert list(record) == ["messageId", "receiptHandle", "body", "attributes",
                                "messageAttributes", "md5OfBody", "eventSource", "eventSourceARN",
                                "awsRegion"]
        assert (record["eventSource"], record["awsRegion"]) == ("aws:sqs", "us-east-1")
        until(lambda: counts(sqs, url) == (0, 0), what="the queue to empty")
        records = until(lambda: [r for r in daemon.records() if r["source_arn"] == arn("deliver")],
                        what="metering records")
        assert all(r["function"] == "esm" and r["source"] == "sqs" for r in records)
        got = until(lambda: (m := lam.get_event_source_mapping(UUID=created["UUID"]))
                    ["LastProcessingResult"] == "OK" and m, what="LastProcessingResult OK")
        assert got["State"] == "Enabled"
    finally:
        lam.delete_event_source_mapping(UUID=created["UUID"])


def test_get_list_update_delete(daemon: Daemon, lam: Any, sqs: Any) -> None:
    # A visibility timeout as short as the function's: a receive cancelled by the update may
    # still take a message (moto, like SQS, hands it to the closed request), which comes back.
    url = queue(sqs, "crud", visibility=3)
    made = lam.create_event_source_mapping(FunctionName=function_arn("esm"),
                                           EventSourceArn=arn("crud"), BatchSize=1)
    key = made["UUID"]
    got = lam.get_event_source_mapping(UUID=key)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert (got["State"], got["BatchSize"], got["FunctionArn"]) == ("Enabled", 1, function_arn("esm"))
    for query in ({"FunctionName": "esm"}, {"FunctionName": function_arn("esm")},
                  {"EventSourceArn": arn("crud")}, {}):
        listed = lam.list_event_source_mappings(**query)["EventSourceMappings"]
        assert key in [m["UUID"] for m in listed], query
    assert lam.list_event_source_mappings(FunctionName="other",
                                          EventSourceArn=arn("crud"))["EventSourceMappings"] == []

    # Given a disabled mapping, when a message arrives, then it stays in the queue.
    disabled = lam.update_event_source_mapping(UUID=key, Enabled=False)
    assert disabled["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert (disabled["State"], disabled["UUID"]) == ("Updating", key)
    assert disabled["LastModified"] >= made["LastModified"]
    assert lam.get_event_source_mapping(UUID=key)["State"] == "Disabled"
    sqs.send_message(QueueUrl=url, MessageBody="while disabled")
    time.sleep(2)  # long enough for a poller that still ran to have received it
    assert delivered(daemon, "crud") == []
    assert sum(counts(sqs, url)) == 1

    enabled = lam.update_event_source_mapping(UUID=key, Enabled=True)
    assert enabled["State"] == "Updating"
    until(lambda: delivered(daemon, "crud"), what="delivery once enabled again")
    assert delivered(daemon, "crud") == [("esm", "while disabled")]
    until(lambda: counts(sqs, url) == (0, 0), what="the queue to empty")

    deleted = lam.delete_event_source_mapping(UUID=key)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert (deleted["State"], deleted["UUID"]) == ("Deleting", key)
    assert error_of(lambda: lam.get_event_source_mapping(UUID=key)) == (
        404, "ResourceNotFoundException", esm.NOT_FOUND)
    assert key not in [m["UUID"] for m in lam.list_event_source_mappings()["EventSourceMappings"]]
    # Deleted, it polls no more.
    sqs.send_message(QueueUrl=url, MessageBody="after delete")
    time.sleep(2)
    assert delivered(daemon, "crud") == [("esm", "while disabled")]


def test_update_moves_the_mapping_and_changes_its_settings(daemon: Daemon, lam: Any,
                                                           sqs: Any) -> None:
    url = queue(sqs, "move", visibility=3)
    key = lam.create_event_source_mapping(FunctionName="esm", EventSourceArn=arn("move"))["UUID"]
    try:
        pattern = json.dumps({"body": ["keep"]})
        moved = lam.update_event_source_mapping(
            UUID=key, FunctionName="other", BatchSize=20, MaximumBatchingWindowInSeconds=1,
            FilterCriteria={"Filters": [{"Pattern": pattern}]},
            FunctionResponseTypes=["ReportBatchItemFailures"], ScalingConfig={"MaximumConcurrency": 3})
        assert moved["FunctionArn"] == function_arn("other")
        assert (moved["BatchSize"], moved["MaximumBatchingWindowInSeconds"]) == (20, 1)
        assert moved["FilterCriteria"] == {"Filters": [{"Pattern": pattern}]}
        assert moved["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert moved["ScalingConfig"] == {"MaximumConcurrency": 3}
        assert lam.get_event_source_mapping(UUID=key)["FunctionArn"] == function_arn("other")

        # The restarted pollers have the new settings: the new function, the filter.
        sqs.send_message(QueueUrl=url, MessageBody="drop")
        sqs.send_message(QueueUrl=url, MessageBody="keep")
        until(lambda: counts(sqs, url) == (0, 0), what="both messages deleted")
        until(lambda: delivered(daemon, "move"), what="the kept message")
        assert delivered(daemon, "move") == [("other", "keep")]

        cleared = lam.update_event_source_mapping(UUID=key, FilterCriteria={}, ScalingConfig={},
                                                  FunctionResponseTypes=[])
        assert "FilterCriteria" not in cleared and "ScalingConfig" not in cleared
        assert cleared["FunctionResponseTypes"] == []
        assert error_of(lambda: lam.update_event_source_mapping(
            UUID=key, MaximumBatchingWindowInSeconds=0)) == (
            400, "InvalidParameterValueException", "Maximum batch window in seconds must be "
            "greater than 0 if maximum batch size is greater than 10")
        assert error_of(lambda: lam.update_event_source_mapping(UUID=key, FunctionName="nope")) == (
            404, "ResourceNotFoundException", f"Function not found: {function_arn('nope')}")
        assert lam.get_event_source_mapping(UUID=key)["BatchSize"] == 20  # a refusal changes nothing
    finally:
        lam.delete_event_source_mapping(UUID=key)


@pytest.fixture(scope="module")
def queues(sqs: Any) -> None:
    queue(sqs, "errors")
    queue(sqs, "short", visibility=5)


@pytest.mark.parametrize(("kwargs", "status", "code", "message"), [
    ({"FunctionName": "nope", "EventSourceArn": arn("errors")}, 404, "ResourceNotFoundException",
     f"Function not found: {function_arn('nope')}"),
    ({"FunctionName": "esm:PROD", "EventSourceArn": arn("errors")}, 404, "ResourceNotFoundException",
     f"Function not found: {function_arn('esm')}"),
    ({"FunctionName": "esm", "EventSourceArn": "not-an-arn"}, 400, "ValidationException",
     V + f"Value 'not-an-arn' at 'eventSourceArn' failed to satisfy constraint: {ARN_CONSTRAINT}"),
    ({"FunctionName": "esm", "EventSourceArn": arn("errors"), "BatchSize": 0}, 400,
     "ValidationException", V + "Value '0' at 'batchSize' failed to satisfy constraint: Member must "
     "have value greater than or equal to 1"),
    ({"FunctionName": "esm", "EventSourceArn": arn("errors"), "BatchSize": 10001}, 400,
     "ValidationException", V + "Value '10001' at 'batchSize' failed to satisfy constraint: Member "
     "must have value less than or equal to 10000"),
    ({"FunctionName": "esm", "EventSourceArn": arn("errors"), "BatchSize": 100,
      "MaximumBatchingWindowInSeconds": 0}, 400, "InvalidParameterValueException",
     "Maximum batch window in seconds must be greater than 0 if maximum batch size is greater than 10"),
    ({"FunctionName": "long", "EventSourceArn": arn("short")}, 400, "InvalidParameterValueException",
     "Queue visibility timeout: 5 seconds is less than Function timeout: 30 seconds"),
    ({"FunctionName": "esm", "EventSourceArn": arn("missing")}, 400, "InvalidParameterValueException",
     "Error occurred while ReceiveMessage. SQS Error Code: AWS.SimpleQueueService.NonExistentQueue. "
     f"The queue {arn('missing')} does not exist"),
    ({"FunctionName": "esm", "EventSourceArn": "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x",
      "StartingPosition": "LATEST"}, 400, "InvalidParameterValueException",
     "StartingPosition is not valid for SQS event sources."),
    ({"FunctionName": "esm", "EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"}, 400,
     "InvalidParameterValueException", "Unsupported event source arn:aws:kinesis:us-east-1:"
     "123456789012:stream/s: Headwater maps Amazon SQS queues only, not kinesis"),
    ({"FunctionName": "esm", "EventSourceArn": arn("errors"), "ParallelizationFactor": 2}, 400,
     "InvalidParameterValueException", "Not supported by Headwater: ParallelizationFactor"),
])
def test_create_refusals(queues: None, lam: Any, loose: Any, kwargs: dict[str, Any], status: int,
                         code: str, message: str) -> None:
    status_, code_, message_ = error_of(lambda: loose.create_event_source_mapping(**kwargs))
    assert (status_, code_) == (status, code)
    assert message_.startswith(message), message_
    assert not [m for m in lam.list_event_source_mappings()["EventSourceMappings"]
                if m["EventSourceArn"] == kwargs["EventSourceArn"]]


def test_a_second_mapping_of_a_function_and_queue_conflicts(daemon: Daemon, lam: Any,
                                                            sqs: Any) -> None:
    queue(sqs, "dup")
    key = lam.create_event_source_mapping(FunctionName="esm", EventSourceArn=arn("dup"))["UUID"]
    try:
        expected = (409, "ResourceConflictException",
                    f'An event source mapping with SQS arn (" {arn("dup")} ") and function (" esm ") '
                    f"already exists. Please update or delete the existing mapping with UUID {key}")
        for name in ("esm", function_arn("esm")):
            assert error_of(lambda n=name: lam.create_event_source_mapping(
                FunctionName=n, EventSourceArn=arn("dup"))) == expected
        # Another function may map the same queue; moving it onto esm's conflicts.
        second = lam.create_event_source_mapping(FunctionName="other", EventSourceArn=arn("dup"))
        try:
            assert error_of(lambda: lam.update_event_source_mapping(
                UUID=second["UUID"], FunctionName="esm")) == expected
        finally:
            lam.delete_event_source_mapping(UUID=second["UUID"])
    finally:
        lam.delete_event_source_mapping(UUID=key)
    assert lam.list_event_source_mappings(EventSourceArn=arn("dup"))["EventSourceMappings"] == []


def test_an_unknown_uuid_is_not_found(lam: Any) -> None:
    unknown = str(uuid.uuid4())
    expected = (404, "ResourceNotFoundException", "The resource you requested does not exist.")
    assert error_of(lambda: lam.get_event_source_mapping(UUID=unknown)) == expected
    assert error_of(lambda: lam.update_event_source_mapping(UUID=unknown, Enabled=False)) == expected
    assert error_of(lambda: lam.delete_event_source_mapping(UUID=unknown)) == expected


def test_a_config_trigger_is_listed_but_read_only(daemon: Daemon, lam: Any) -> None:
    listed = lam.list_event_source_mappings(FunctionName="configured")["EventSourceMappings"]
    assert [(m["EventSourceArn"], m["State"]) for m in listed] == [(arn("cfg"), "Enabled")]
    key = listed[0]["UUID"]
    assert lam.get_event_source_mapping(UUID=key)["FunctionArn"] == function_arn("configured")
    for call in (lambda: lam.update_event_source_mapping(UUID=key, Enabled=False),
                 lambda: lam.delete_event_source_mapping(UUID=key)):
        status, code, message = error_of(call)
        assert (status, code) == (400, "InvalidParameterValueException")
        assert "defined in config.toml" in message and "read-only" in message
    assert lam.get_event_source_mapping(UUID=key)["State"] == "Enabled"


def test_list_pages(daemon: Daemon, lam: Any, sqs: Any) -> None:
    made = []
    for name in ("page1", "page2", "page3"):
        queue(sqs, name)
        made.append(lam.create_event_source_mapping(FunctionName="other",
                                                    EventSourceArn=arn(name))["UUID"])
    try:
        first = lam.list_event_source_mappings(FunctionName="other", MaxItems=2)
        assert len(first["EventSourceMappings"]) == 2 and first["NextMarker"]
        paged = [m["UUID"] for page in lam.get_paginator("list_event_source_mappings").paginate(
            FunctionName="other", PaginationConfig={"PageSize": 1}) for m in page["EventSourceMappings"]]
        assert sorted(paged) == sorted(made)
    finally:
        for key in made:
            lam.delete_event_source_mapping(UUID=key)


def aws_cli(daemon: Daemon, *args: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    done = subprocess.run([str(Path(sys.executable).with_name("aws")), "lambda", *args,
                           "--endpoint-url", daemon.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_aws_cli(daemon: Daemon, lam: Any, sqs: Any) -> None:
    queue(sqs, "cli")
    created = aws_cli(daemon, "create-event-source-mapping", "--function-name", "esm",
                      "--event-source-arn", arn("cli"), "--batch-size", "5")
    try:
        assert (created["BatchSize"], created["State"]) == (5, "Creating")
        assert created["FunctionArn"] == function_arn("esm")
        assert isinstance(created["LastModified"], int | float | str)
        listed = aws_cli(daemon, "list-event-source-mappings", "--function-name", "esm")
        assert created["UUID"] in [m["UUID"] for m in listed["EventSourceMappings"]]
    finally:
        lam.delete_event_source_mapping(UUID=created["UUID"])


def test_mappings_survive_a_restart(make_daemon: Callable[..., Daemon], moto: MotoServer,
                                    sqs: Any) -> None:
    # The stopped daemon's last long poll outlives it inside moto and takes the next message,
    # which comes back after the visibility timeout: a short one keeps the test short.
    url = queue(sqs, "kept", visibility=3)
    queue(sqs, "paused")
    first = make_daemon(aws_section(moto.endpoint) + function_toml("kept", "esmfn.handler"), FILES)
    with_client = lambda_client(first.url)
    try:
        key = with_client.create_event_source_mapping(FunctionName="kept", EventSourceArn=arn("kept"),
                                                      BatchSize=3)["UUID"]
        paused = with_client.create_event_source_mapping(
            FunctionName="kept", EventSourceArn=arn("paused"), Enabled=False)["UUID"]
        sqs.send_message(QueueUrl=url, MessageBody="before")
        until(lambda: delivered(first, "kept"), what="delivery before the restart")
    finally:
        with_client.close()
    assert first.stop(signal.SIGTERM) == 0

    second = Daemon(first.folder, first.config_path.read_text()).start()
    client = lambda_client(second.url)
    try:
        listed = {m["UUID"]: m for m in client.list_event_source_mappings(
            FunctionName="kept")["EventSourceMappings"]}
        assert set(listed) == {key, paused}
        assert (listed[key]["State"], listed[key]["BatchSize"]) == ("Enabled", 3)
        assert listed[paused]["State"] == "Disabled"
        sqs.send_message(QueueUrl=url, MessageBody="after")
        until(lambda: delivered(second, "kept"), what="delivery after the restart")
        assert delivered(second, "kept") == [("kept", "after")]
    finally:
        client.close()
        second.stop(signal.SIGTERM)


def test_credentials_come_first_and_an_unreachable_queue_is_refused(
        make_daemon: Callable[..., Daemon]) -> None:
    # Nothing listens at the daemon's [aws] endpoint.
    daemon = make_daemon(aws_section(f"http://127.0.0.1:{free_port()}")
                         + function_toml("locked", "esmfn.handler"), FILES,
                         server='access_keys = { AKIDESM = "s3cret" }')
    body = json.dumps({"FunctionName": "locked", "EventSourceArn": arn("q")}).encode()
    unknown = f"/2015-03-31/event-source-mappings/{uuid.uuid4()}"
    for method, path, payload in [("POST", "/2015-03-31/event-source-mappings/", body),
                                  ("GET", "/2015-03-31/event-source-mappings/", None),
                                  ("GET", unknown, None), ("PUT", unknown, b'{"Enabled": false}'),
                                  ("DELETE", unknown, None)]:
        r = daemon.request(method, path, payload)
        assert (r.status, r.headers["x-amzn-ErrorType"]) == (
            403, "MissingAuthenticationTokenException"), (method, path)

    client = lambda_client(daemon.url, key="AKIDESM", secret="s3cret")
    try:
        status, code, message = error_of(lambda: client.create_event_source_mapping(
            FunctionName="locked", EventSourceArn=arn("q")))
        assert (status, code) == (400, "InvalidParameterValueException")
        assert message.startswith(f"The queue {arn('q')} could not be checked: "), message
        assert client.list_event_source_mappings()["EventSourceMappings"] == []
    finally:
        client.close()
