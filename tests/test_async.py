"""Asynchronous invocation end to end: Event invokes through the Lambda API (boto3, the AWS CLI),
retries, destinations, the dead-letter store and its CLI, the EventInvokeConfig API, schedules,
and the faults: kill -9 with events pending, two daemons on one PostgreSQL, a store that cannot
be had. Real daemons, real workers, the machine's PostgreSQL."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import Daemon, function_toml
from moto_server import MotoServer, aws_section, until
from scrape import scrape

from router.cli.scaffold import create

EVENT = {"X-Amz-Invocation-Type": "Event"}


def section(store: str = "sqlite", **extra: object) -> str:
    lines = [f'store = "{store}"', "retry_delays_s = [0.2, 0.2]", "backoff_base_s = 0.05",
             "poll_s = 0.05", *(f"{k} = {json.dumps(v)}" for k, v in extra.items())]
    return "shutdown_grace_s = 5\n[async]\n" + "\n".join(lines) + "\n"


def lam(daemon: Daemon) -> Any:
    return boto3.client("lambda", endpoint_url=daemon.url, region_name="us-east-1",
                        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                        config=BotoConfig(retries={"max_attempts": 1}))


def cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                          env={"HEADWATER_URL": daemon.url, "PATH": os.environ["PATH"]}, timeout=30)


@pytest.fixture(scope="module")
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    functions = "".join([
        function_toml("records", "asyncfn.records"),
        function_toml("flaky", "asyncfn.flaky"), '[functions.async]\non_success = "destination"\n',
        function_toml("fails", "asyncfn.fails"), "[functions.async]\nmax_retry_attempts = 1\n",
        function_toml("failsto", "asyncfn.fails"),
        '[functions.async]\nmax_retry_attempts = 0\non_failure = '
        '"arn:aws:lambda:us-east-1:000000000000:function:destination"\n',
        function_toml("destination", "asyncfn.destination"),
        function_toml("apiconfig", "asyncfn.records", api_writable=True),
        function_toml("readonly", "asyncfn.records"),
    ])
    return make_daemon(functions, server=section())


def test_an_event_invoke_is_202_then_runs_with_its_payload(daemon: Daemon) -> None:
    r = lam(daemon).invoke(FunctionName="records", InvocationType="Event",
                           Payload=json.dumps({"n": 1, "text": "été"}).encode())
    assert r["StatusCode"] == 202 and r["Payload"].read() == b""
    request_id = r["ResponseMetadata"]["RequestId"]
    got = until(lambda: [e for e in daemon.printed("EVENT") if e["request_id"] == request_id],
                what="the event to run")
    assert got[0]["event"] == {"n": 1, "text": "été"}
    record = until(lambda: [x for x in daemon.records() if x["request_id"] == request_id],
                   what="its metering record")[0]
    assert (record["source"], record["invocation_type"], record["attempt"]) == ("event", "Event", 1)
    assert record["outcome"] == "success"


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_the_aws_cli_invokes_asynchronously(daemon: Daemon, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        ["aws", "lambda", "invoke", "--endpoint-url", daemon.url, "--function-name", "records",
         "--invocation-type", "Event",
         "--payload", '{"from": "cli"}', str(tmp_path / "out.json")],
        capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["StatusCode"] == 202
    until(lambda: any(e["event"] == {"from": "cli"} for e in daemon.printed("EVENT")),
          what="the CLI's event to run")


def test_headwater_invoke_async_prints_the_request_id_and_the_event_runs(daemon: Daemon) -> None:
    done = cli(daemon, "invoke", "records", "--async", "--payload", '{"via": "headwater"}')
    assert done.returncode == 0, done.stderr
    request_id = done.stdout.strip()
    until(lambda: any(e["request_id"] == request_id and e["event"] == {"via": "headwater"}
                      for e in daemon.printed("EVENT")), what="the event to run")


def test_a_function_that_fails_twice_then_succeeds_ends_in_on_success(daemon: Daemon) -> None:
    payload = {"key": "twice", "failures": 2}
    r = daemon.invoke("flaky", payload, headers=EVENT)
    assert r.status == 202
    request_id = r.headers["x-amzn-RequestId"]
    found = until(lambda: [d for d in daemon.printed("DESTINATION")
                           if d["requestContext"]["requestId"] == request_id],
                  timeout=20, what="the success record")
    record = found[0]
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id, "functionArn": "arn:aws:lambda:us-east-1:000000000000:function:flaky",
        "condition": "Success", "approximateInvokeCount": 3}
    assert record["requestPayload"] == payload
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"attempts": 3}
    datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
    # One request, three attempts: each its own metering record, under the same request id.
    attempts = [(x["attempt"], x["outcome"]) for x in daemon.records() if x["request_id"] == request_id]
    assert sorted(attempts) == [(1, "error"), (2, "error"), (3, "success")]


def test_a_function_that_always_fails_is_dead_lettered_and_redrive_runs_it_again(
        daemon: Daemon) -> None:
    raw = b'{"order": 7,   "note": "caf\\u00e9"}'  # odd spacing and an escape: kept byte for byte
    request_id = daemon.invoke("fails", raw=raw, headers=EVENT).headers["x-amzn-RequestId"]
    listed = until(lambda: request_id in cli(daemon, "dlq", "list", "fails").stdout, timeout=20,
                   what="the dead letter in `headwater dlq list`")
    assert listed
    shown = cli(daemon, "dlq", "show", request_id)
    assert shown.returncode == 0, shown.stderr
    letter = json.loads(shown.stdout)
    assert letter["Condition"] == "RetriesExhausted" and letter["ApproximateInvokeCount"] == 2
    assert letter["Payload"] == json.loads(raw)
    assert letter["Record"]["responsePayload"]["errorType"] == "ValueError"
    assert letter["Record"]["responseContext"]["functionError"] == "Unhandled"
    # The payload as stored: the exact bytes the caller sent.
    stored = daemon.request("GET", f"/headwater/dead-letters/{request_id}").body
    assert raw in stored
    before = len([x for x in daemon.records() if x["function"] == "fails"])
    redriven = cli(daemon, "dlq", "redrive", "fails", "--id", request_id)
    assert redriven.returncode == 0, redriven.stderr
    new_id = redriven.stdout.split()[-1]
    until(lambda: len([x for x in daemon.records() if x["function"] == "fails"]) >= before + 2,
          timeout=20, what="the redriven event to run (twice: it fails again)")
    assert {x["request_id"] for x in daemon.records()
            if x["function"] == "fails"} >= {request_id, new_id}
    until(lambda: new_id in cli(daemon, "dlq", "list").stdout, what="it to be dead again")
    assert request_id not in cli(daemon, "dlq", "list").stdout
    assert cli(daemon, "dlq", "show", "no-such-id").returncode == 1


def test_on_failure_can_be_another_function(daemon: Daemon) -> None:
    request_id = daemon.invoke("failsto", {"k": 1}, headers=EVENT).headers["x-amzn-RequestId"]
    found = until(lambda: [d for d in daemon.printed("DESTINATION")
                           if d["requestContext"]["requestId"] == request_id],
                  timeout=20, what="the failure record")
    assert found[0]["requestContext"]["condition"] == "RetriesExhausted"
    assert found[0]["requestContext"]["approximateInvokeCount"] == 1
    assert found[0]["requestPayload"] == {"k": 1}


def test_bad_event_invokes_get_aws_errors(daemon: Daemon) -> None:
    client = lam(daemon)
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="records", InvocationType="Event",
                      Payload=b'{"a": "' + b"x" * (1024 * 1024) + b'"}')
    assert e.value.response["Error"]["Code"] == "RequestTooLargeException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="nosuch", InvocationType="Event", Payload=b"{}")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        client.invoke(FunctionName="records", InvocationType="Event", Payload=b"{not json")
    assert e.value.response["Error"]["Code"] == "InvalidRequestContentException"


def test_the_event_invoke_config_api(daemon: Daemon) -> None:
    client = lam(daemon)
    with pytest.raises(ClientError) as e:
        client.get_function_event_invoke_config(FunctionName="apiconfig")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert client.list_function_event_invoke_configs(
        FunctionName="apiconfig")["FunctionEventInvokeConfigs"] == []
    put = client.put_function_event_invoke_config(
        FunctionName="apiconfig", MaximumRetryAttempts=0, MaximumEventAgeInSeconds=120,
        DestinationConfig={"OnSuccess": {
            "Destination": "arn:aws:lambda:us-east-1:000000000000:function:destination"}})
    assert put["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:apiconfig:$LATEST"
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (0, 120)
    updated = client.update_function_event_invoke_config(FunctionName="apiconfig",
                                                         MaximumRetryAttempts=1)
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (1, 120)
    got = client.get_function_event_invoke_config(FunctionName="apiconfig")
    assert got["DestinationConfig"]["OnSuccess"]["Destination"].endswith(":function:destination")
    # In effect at once: the success now reaches the destination.
    request_id = daemon.invoke("apiconfig", {"via": "api"}, headers=EVENT).headers["x-amzn-RequestId"]
    until(lambda: any(d["requestContext"]["requestId"] == request_id
                      for d in daemon.printed("DESTINATION")), what="the configured destination")
    for bad in ({"MaximumRetryAttempts": 3},
                {"DestinationConfig": {"OnSuccess": {"Destination": "not-an-arn!"}}}):
        with pytest.raises(ClientError) as e:
            client.put_function_event_invoke_config(FunctionName="apiconfig", **bad)
        assert e.value.response["Error"]["Code"] == "InvalidParameterValueException", bad
    # What boto3 would refuse before sending it, sent as it is.
    for raw in (b'{"MaximumEventAgeInSeconds": 59}', b'{"Retries": 1}', b"[1]"):
        r = daemon.request("PUT", "/2019-09-25/functions/apiconfig/event-invoke-config", raw)
        assert (r.status, r.headers["x-amzn-ErrorType"]) == (400, "InvalidParameterValueException")
    client.delete_function_event_invoke_config(FunctionName="apiconfig")
    with pytest.raises(ClientError):
        client.get_function_event_invoke_config(FunctionName="apiconfig")
    with pytest.raises(ClientError) as e:
        client.put_function_event_invoke_config(FunctionName="readonly", MaximumRetryAttempts=0)
    assert e.value.response["Error"]["Code"] == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        client.get_function_event_invoke_config(FunctionName="nosuch")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_metrics_show_the_async_queue(daemon: Daemon) -> None:
    until(lambda: scrape(daemon).value("headwater_async_dead_lettered_total", function="fails") >= 1,
          what="async metrics")
    found = scrape(daemon)
    assert found.matching("headwater_async_retries_total", function="flaky")
    assert found.matching("headwater_async_events_pending", function="flaky")


# --- faults ------------------------------------------------------------------------------------


def test_kill_9_with_1000_events_pending_loses_none(make_daemon: Callable[..., Daemon]) -> None:
    first = make_daemon(function_toml("slow", "asyncfn.slow", max_workers=2),
                        server=section(synchronous="NORMAL"))
    ids = []
    for i in range(1000):
        r = first.invoke("slow", {"i": i, "sleep": 0.02}, headers=EVENT)
        assert r.status == 202
        ids.append(r.headers["x-amzn-RequestId"])
    first.stop(signal.SIGKILL)
    ran_before = {x["request_id"] for x in first.records() if x["outcome"] == "success"}
    assert len(ran_before) < 1000  # some were still pending when it died
    second = Daemon(first.folder, first.config_path.read_text()).start()
    try:
        until(lambda: {x["request_id"] for x in second.records()
                       if x["outcome"] == "success"} >= set(ids), timeout=60,
              what="every accepted event to have run")
        runs = Counter(x["request_id"] for x in second.records() if x["outcome"] == "success")
        assert set(runs) == set(ids)
    finally:
        second.stop()


def test_an_unreachable_store_gives_503_never_a_202(make_daemon: Callable[..., Daemon],
                                                   unused_tcp_port: int) -> None:
    daemon = make_daemon(function_toml("nostore", "asyncfn.records"),
                         server=section(f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/x"))
    r = daemon.invoke("nostore", {}, headers=EVENT)
    assert r.status == 503
    assert r.headers["x-amzn-ErrorType"].startswith("ServiceException")
    ready = daemon.request("GET", "/readyz")
    assert ready.status == 200 and "cannot connect" in json.loads(ready.body)["async"]
    assert daemon.invoke("nostore", {"sync": True}).status == 200  # the rest still serves
    assert any("asynchronous invocation unavailable" in line for line in daemon.lines)


def test_a_corrupt_store_is_reported_at_start_and_in_readyz(
        make_daemon: Callable[..., Daemon]) -> None:
    def corrupt(folder: Path) -> None:
        (folder / "var").mkdir(exist_ok=True)
        (folder / "var" / "async.sqlite3").write_bytes(b"this is not a database" * 100)

    daemon = make_daemon(function_toml("corrupt", "asyncfn.records"), server=section(),
                         before_start=corrupt)
    assert daemon.invoke("corrupt", {}, headers=EVENT).status == 503
    assert "async.sqlite3" in json.loads(daemon.request("GET", "/readyz").body)["async"]


# --- schedules ---------------------------------------------------------------------------------


def schedule_toml(function: str, expression: str, **options: object) -> str:
    lines = ["[[functions.triggers]]", 'type = "schedule"', f'expression = "{expression}"',
             *(f"{k} = {json.dumps(v)}" for k, v in options.items())]
    return function_toml(function, "asyncfn.records") + "\n".join(lines) + "\n"


def test_a_schedule_invokes_with_eventbridges_scheduled_event(
        make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(schedule_toml("ticks", "rate(1 second)", name="every-second"),
                         server=section())
    events = until(lambda: [e["event"] for e in daemon.printed("EVENT")][:3] if len(
        daemon.printed("EVENT")) >= 3 else None, timeout=10, what="three ticks")
    first = events[0]
    assert set(first) == {"version", "id", "detail-type", "source", "account", "time", "region",
                          "resources", "detail"}
    assert first["detail-type"] == "Scheduled Event" and first["source"] == "aws.events"
    assert first["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/every-second"]
    assert first["detail"] == {} and first["account"] == "000000000000"
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in events]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(times)] == [1.0, 1.0]
    records = [x for x in daemon.records() if x["function"] == "ticks"]
    assert records and all(x["source"] == "schedule" for x in records)
    # Fired on time: the handler starts within a few ms of the scheduled second.
    late = [datetime.fromisoformat(x["start"].replace("Z", "+00:00")).timestamp() % 1 for x in records]
    assert min(late) < 0.5


def test_an_invalid_schedule_fails_config_validation(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        "[[functions]]\nname = \"x\"\nhandler = \"a.b\"\ncode = \".\"\n"
        "[[functions.triggers]]\ntype = \"schedule\"\nexpression = \"cron(0 12 * * *)\"\n")
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--config",
                           str(tmp_path / "config.toml")], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "triggers[0].expression" in done.stderr and "six fields" in done.stderr


# --- two daemons on one PostgreSQL -------------------------------------------------------------


def test_two_daemons_on_postgresql_share_the_events_and_fire_each_tick_once(
        make_daemon: Callable[..., Daemon], postgres_dsn: str) -> None:
    functions = (function_toml("shared", "asyncfn.slow", max_workers=2)
                 + schedule_toml("pgticks", "rate(1 second)", name="pg-every-second"))
    nodes = [make_daemon(functions, server=section(postgres_dsn, lease_s=3)) for _ in range(2)]
    ids = []
    for i in range(200):
        r = nodes[i % 2].invoke("shared", {"i": i, "sleep": 0.01}, headers=EVENT)
        assert r.status == 202
        ids.append(r.headers["x-amzn-RequestId"])

    def successes() -> Counter[str]:
        return Counter(x["request_id"] for node in nodes for x in node.records()
                       if x["function"] == "shared" and x["outcome"] == "success")

    until(lambda: set(successes()) >= set(ids), timeout=60, what="every event to run")
    per_node = [sum(1 for x in node.records() if x["function"] == "shared") for node in nodes]
    assert all(n > 0 for n in per_node), per_node  # both did some of the work
    assert max(successes().values()) == 1  # no node took an event another was running
    time.sleep(4)
    ticks = Counter(e["event"]["time"] for node in nodes for e in node.printed("EVENT")
                    if isinstance(e["event"], dict) and "detail-type" in e["event"])
    assert len(ticks) >= 4 and set(ticks.values()) == {1}, ticks


def test_a_dead_nodes_events_are_taken_over(make_daemon: Callable[..., Daemon],
                                           postgres_dsn: str) -> None:
    functions = function_toml("takeover", "asyncfn.slow", max_workers=1)
    dying = make_daemon(functions, server=section(postgres_dsn, lease_s=2))
    ids = [dying.invoke("takeover", {"i": i, "sleep": 0.2}, headers=EVENT).headers["x-amzn-RequestId"]
           for i in range(20)]
    until(lambda: any(x["function"] == "takeover" for x in dying.records()), what="work to start")
    dying.stop(signal.SIGKILL)
    survivor = make_daemon(functions, server=section(postgres_dsn, lease_s=2))
    done = {x["request_id"] for x in dying.records() if x["outcome"] == "success"}
    until(lambda: done | {x["request_id"] for x in survivor.records()
                          if x["outcome"] == "success"} >= set(ids),
          timeout=60, what="the survivor to run what the dead node held and left")


def test_catch_up_latest_fires_the_last_missed_tick_once(make_daemon: Callable[..., Daemon]) -> None:
    def times(events: list[Any]) -> list[float]:
        return [epoch(e["event"]["time"]) for e in events]

    daemon = make_daemon(schedule_toml("catchup", "rate(1 second)", catch_up="latest"),
                         server=section())
    until(lambda: daemon.printed("EVENT"), what="a first tick")
    assert daemon.stop() == 0
    last_before = max(times(daemon.printed("EVENT")))
    time.sleep(3.2)  # three ticks or more go by with no daemon
    again = Daemon(daemon.folder, daemon.config_path.read_text()).start()
    try:
        line = again.wait_for_line("firing the tick missed at", timeout=10)
        caught = epoch(line.rpartition("missed at ")[2].strip())
        until(lambda: len(again.printed("EVENT")) >= 2, what="ticks after the restart")
        fired = times(again.printed("EVENT"))
        assert caught - last_before >= 3, (last_before, caught)  # the latest one missed …
        assert fired.count(caught) == 1, fired  # … fired once …
        assert not [t for t in fired if last_before < t < caught], fired  # … and no earlier one
    finally:
        again.stop()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_the_scheduled_blueprint_runs_on_a_schedule(make_daemon: Callable[..., Daemon]) -> None:
    toml = function_toml("report", "app.handler", code="report") + (
        '[[functions.triggers]]\ntype = "schedule"\nexpression = "rate(1 second)"\n'
        'timezone = "Europe/Paris"\nname = "report-every-second"\n')
    daemon = make_daemon(toml, server=section(),
                         before_start=lambda folder: create("report", "scheduled", folder))
    line = daemon.wait_for_line("scheduled run at", timeout=10)
    assert "arn:aws:events:us-east-1:000000000000:rule/report-every-second" in line


def test_on_failure_can_be_an_sqs_queue(make_daemon: Callable[..., Daemon]) -> None:
    with MotoServer() as moto:
        sqs = boto3.client("sqs", endpoint_url=moto.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        url = sqs.create_queue(QueueName="failures")["QueueUrl"]
        toml = function_toml("tosqs", "asyncfn.fails") + (
            "[functions.async]\nmax_retry_attempts = 0\n"
            'on_failure = "arn:aws:sqs:us-east-1:123456789012:failures"\n')
        daemon = make_daemon(aws_section(moto.endpoint) + toml, server=section())
        request_id = daemon.invoke("tosqs", {"to": "sqs"}, headers=EVENT).headers["x-amzn-RequestId"]
        got = until(lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"),
                    timeout=20, what="the record in the queue")
        record = json.loads(got[0]["Body"])
        assert record["requestContext"]["requestId"] == request_id
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert record["requestPayload"] == {"to": "sqs"}
        assert cli(daemon, "dlq", "list", "tosqs").stdout.count(request_id) == 0
        sqs.close()


def test_a_function_with_no_concurrency_is_throttled_without_holding_up_others(
        make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(function_toml("off", "asyncfn.records", max_workers=0)
                         + function_toml("on", "asyncfn.records"), server=section(max_in_flight=4))
    for _ in range(8):  # more than the node may hold at once
        assert daemon.invoke("off", {"off": True}, headers=EVENT).status == 202
    assert daemon.invoke("on", {"on": True}, headers=EVENT).status == 202
    until(lambda: any(e["event"] == {"on": True} for e in daemon.printed("EVENT")),
          what="the other function's event to run")

    until(lambda: scrape(daemon).value("headwater_async_retries_total", function="off") >= 8,
          what="the throttled events to be put back")
    assert not [e for e in daemon.printed("EVENT") if e["event"] == {"off": True}]
    assert "off" not in cli(daemon, "dlq", "list").stdout  # kept, within its age
