"""SQS triggers end to end: the real daemon polling a real SQS endpoint (moto's server).

The function prints each event it gets as one ``EVENT {json}`` line, which the daemon logs; what
it did to the queue is read back from the queue itself (deleted, left, redriven to the DLQ).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from conftest import Daemon, function_toml
from moto_server import MotoServer, aws_section, until

from router.cli.scaffold import create, handler_of

ACCOUNT = "123456789012"
HANDLER = """
import json, time

def handler(event, context):
    print("EVENT " + json.dumps(event))
    bodies = [r["body"] for r in event["Records"]]
    for body in bodies:
        if body.startswith("sleep:"):
            time.sleep(float(body.split(":")[1]))
    if any(b == "fail" for b in bodies):
        raise RuntimeError("a message said fail")
    return None

def partial(event, context):
    print("EVENT " + json.dumps(event))
    return {"batchItemFailures": [{"itemIdentifier": r["messageId"]}
                                  for r in event["Records"] if r["body"].startswith("bad")]}

def invalid(event, context):
    print("EVENT " + json.dumps(event))
    return {"batchItemFailures": [{"itemIdentifier": "not-in-the-batch"}]}
"""
FILES = {"functions/sqsfn.py": HANDLER}


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def sqs(moto: MotoServer) -> Any:
    client = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    yield client
    client.close()


def sqs_function(name: str, queue_url: str, handler: str = "sqsfn.handler", *,
                 function: dict[str, object] | None = None, **trigger: object) -> str:
    lines = ["[[functions.triggers]]", 'type = "sqs"', f'queue_url = "{queue_url}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in trigger.items()]
    return function_toml(name, handler, **(function or {})) + "\n".join(lines) + "\n"


def queue(sqs: Any, name: str, *, visibility: int = 30, dlq: tuple[str, int] | None = None) -> str:
    attributes = {"VisibilityTimeout": str(visibility)}
    if dlq is not None:
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq[0],
                                                  "maxReceiveCount": str(dlq[1])})
    return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]


def arn(name: str) -> str:
    return f"arn:aws:sqs:us-east-1:{ACCOUNT}:{name}"


def events(daemon: Daemon) -> list[dict[str, Any]]:
    return daemon.printed("EVENT")


def counts(sqs: Any, url: str) -> tuple[int, int]:
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]), int(a["ApproximateNumberOfMessagesNotVisible"])


def bodies(found: list[dict[str, Any]]) -> list[str]:
    return [r["body"] for e in found for r in e["Records"]]


def test_messages_arrive_in_lambdas_shape_and_are_deleted_after_success(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "shape")
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function("shape", url), FILES)
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "test"}})
    until(lambda: len(bodies(events(daemon))) >= 5, what="5 messages delivered")
    assert sorted(bodies(events(daemon))) == [f"m{i}" for i in range(5)]
    record = events(daemon)[0]["Records"][0]
    assert list(record) == ["messageId", "receiptHandle", "body", "attributes", "messageAttributes",
                            "md5OfBody", "eventSource", "eventSourceARN", "awsRegion"]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn("shape")
    assert record["awsRegion"] == "us-east-1"
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "test", "stringListValues": [], "binaryListValues": [], "dataType": "String"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    until(lambda: counts(sqs, url) == (0, 0), what="the queue to empty")
    records = [r for r in daemon.records() if r["function"] == "shape"]
    assert records and all(r["source"] == "sqs" and r["source_arn"] == arn("shape")
                           and r["outcome"] == "success" for r in records)
    assert len(records) == len(events(daemon))  # one record per invocation, whatever the batch


def test_failures_are_redriven_to_the_dead_letter_queue_and_counts_add_up(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    dlq = queue(sqs, "redrive-dlq")
    url = queue(sqs, "redrive", visibility=1, dlq=(arn("redrive-dlq"), 2))
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "redrive", url, function={"timeout_s": 1}, batch_size=1), FILES)
    sent = ["ok1", "fail", "ok2", "fail", "ok3"]
    for body in sent:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    until(lambda: counts(sqs, dlq)[0] == 2 and counts(sqs, url) == (0, 0), timeout=30,
          what="both failures in the DLQ")
    delivered = bodies(events(daemon))
    succeeded = {b for b in delivered if b.startswith("ok")}
    assert succeeded == {"ok1", "ok2", "ok3"}
    assert delivered.count("fail") == 4  # two receives each, then the queue's redrive
    assert len(sent) == len(succeeded) + counts(sqs, dlq)[0]
    assert sum(b == "ok1" for b in delivered) == 1  # nothing runs again after success


def test_report_batch_item_failures_keeps_only_the_reported(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "partial", visibility=2)
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "partial", url, "sqsfn.partial", function={"timeout_s": 1}, batch_size=10, batch_window_s=1,
        report_batch_item_failures=True), FILES)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": body} for i, body in enumerate(["good1", "bad1", "good2"])])
    until(lambda: bodies(events(daemon)).count("bad1") >= 2, what="bad1 delivered again")
    delivered = bodies(events(daemon))
    assert delivered.count("good1") == 1 and delivered.count("good2") == 1


def test_the_sqs_consumer_blueprint_reports_its_bad_messages_to_the_dead_letter_queue(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    """The blueprint as `headwater init` makes it, unchanged, behind a real queue: the JSON
    messages are processed once, the others come back until the queue redrives them."""
    dlq = queue(sqs, "consumer-dlq")
    url = queue(sqs, "consumer", visibility=2, dlq=(arn("consumer-dlq"), 2))
    trigger = sqs_function("consumer", url, handler_of("sqs-consumer"),
                           function={"timeout_s": 1}, batch_size=10, batch_window_s=1,
                           report_batch_item_failures=True).replace('code = "functions"',
                                                                    'code = "consumer"')
    daemon = make_daemon(aws_section(moto.endpoint) + trigger,
                         before_start=lambda folder: create("consumer", "sqs-consumer", folder))
    sent = [json.dumps({"order": i}) for i in range(4)] + ["not json", "{broken"]
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": body} for i, body in enumerate(sent)])
    until(lambda: counts(sqs, dlq)[0] == 2 and counts(sqs, url) == (0, 0), timeout=30,
          what="both bad messages in the DLQ")
    redriven = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in redriven) == ["not json", "{broken"]
    processed = [line for line in daemon.lines if "processed {'order'" in line]
    assert sorted(int(line.rsplit(" ", 1)[1].rstrip("}")) for line in processed) == [0, 1, 2, 3]
    records = [r for r in daemon.records() if r["function"] == "consumer"]
    assert records and all(r["outcome"] == "success" for r in records)  # partial is not an error


def test_an_invalid_batch_response_fails_the_whole_batch(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "invalid", visibility=1)
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "invalid", url, "sqsfn.invalid", function={"timeout_s": 1},
        report_batch_item_failures=True), FILES)
    sqs.send_message(QueueUrl=url, MessageBody="only")
    until(lambda: bodies(events(daemon)).count("only") >= 2, what="the batch to come back")


def test_filter_criteria_delete_unmatched_messages_without_an_invocation(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "filtered")
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "filtered", url,
        filters=[json.dumps({"body": {"kind": ["image"], "size": [{"numeric": [">", 10]}]}})]),
        FILES)
    wanted = json.dumps({"kind": "image", "size": 20})
    for body in [json.dumps({"kind": "text", "size": 20}), json.dumps({"kind": "image", "size": 5}),
                 "not json", wanted]:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    until(lambda: counts(sqs, url) == (0, 0), what="every message deleted")
    until(lambda: bodies(events(daemon)), what="the matching message")
    assert bodies(events(daemon)) == [wanted]
    assert len([r for r in daemon.records() if r["function"] == "filtered"]) == 1


def test_a_batching_window_gathers_more_than_one_receive(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "window")
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "window", url, batch_size=100, batch_window_s=2), FILES)
    sqs.send_message(QueueUrl=url, MessageBody="first")
    time.sleep(0.5)  # within the window opened by the first message
    for start in range(0, 30, 10):
        sqs.send_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "MessageBody": f"b{i}"} for i in range(start, start + 10)])
    until(lambda: len(bodies(events(daemon))) >= 31, what="31 messages")
    assert max(len(e["Records"]) for e in events(daemon)) > 10  # more than one receive's worth


def test_a_slow_function_stops_the_poller_receiving(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "slow")
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "slow", url, function={"max_workers": 1, "timeout_s": 10}, batch_size=1,
        maximum_concurrency=5), FILES)
    sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": "sleep:0.5"} for i in range(10)])
    in_flight = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        in_flight.append(counts(sqs, url)[1])
        time.sleep(0.1)
    # One running, one queued behind it (room for one per worker), one more being received: never
    # the whole backlog.
    assert max(in_flight) <= 3, in_flight
    assert events(daemon)


def test_sigterm_during_a_batch_leaves_its_messages_in_the_queue(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "sigterm", visibility=60)
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "sigterm", url, function={"timeout_s": 3}),
        FILES, server="shutdown_grace_s = 0.5")
    sqs.send_message(QueueUrl=url, MessageBody="sleep:2.5")
    until(lambda: events(daemon), what="the batch to start")
    assert daemon.stop(signal.SIGTERM) == 0
    # Killed at the grace, unfinished: the message was not deleted, and was made visible again at
    # once rather than after its 60 s visibility timeout.
    got = until(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"),
                timeout=5, what="the message to come back")
    assert got[0]["Body"] == "sleep:2.5"


def test_an_endpoint_outage_is_retried_and_recovers(
        make_daemon: Callable[..., Daemon]) -> None:
    with MotoServer() as server:
        client = boto3.client("sqs", endpoint_url=server.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        try:
            url = queue(client, "outage")
            daemon = make_daemon(aws_section(server.endpoint) + sqs_function("outage", url), FILES)
            client.send_message(QueueUrl=url, MessageBody="before")
            until(lambda: "before" in bodies(events(daemon)), what="the first message")
            server.stop()
            until(lambda: daemon.request("GET", "/readyz").json().get("triggers"),
                  what="/readyz to show the broken trigger")
            ready = daemon.request("GET", "/readyz")
            assert ready.status == 200  # a broken queue does not take the daemon out of service
            assert any("outage" in line and "cannot poll" in line for line in daemon.lines)
            server.start()  # empty: the queue is made again, under the same URL
            assert queue(client, "outage") == url
            client.send_message(QueueUrl=url, MessageBody="after")
            until(lambda: "after" in bodies(events(daemon)), timeout=40, what="recovery")
            until(lambda: not daemon.request("GET", "/readyz").json().get("triggers"),
                  what="/readyz to clear")
        finally:
            client.close()


def test_a_queue_with_a_short_visibility_timeout_is_refused(
        make_daemon: Callable[..., Daemon], moto: MotoServer, sqs: Any) -> None:
    url = queue(sqs, "short", visibility=5)
    daemon = make_daemon(aws_section(moto.endpoint) + sqs_function(
        "short", url, function={"timeout_s": 30}), FILES)
    line = daemon.wait_for_line("refused")
    assert "Queue visibility timeout: 5 seconds is less than Function timeout: 30 seconds" in line
    triggers = daemon.request("GET", "/readyz").json()["triggers"]
    assert [t["eventSourceArn"] for t in triggers.values()] == [arn("short")]
