"""boto3's Lambda client, pointed at the daemon with endpoint_url, works unchanged."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import Daemon, function_toml


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("echo", "outcomes.echo")
                       + function_toml("raises", "outcomes.raises"))


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    return boto3.client(
        "lambda", endpoint_url=daemon.url, region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}))


def test_invoke_request_response(client) -> None:  # type: ignore[no-untyped-def]
    r = client.invoke(FunctionName="echo", Payload=json.dumps({"k": "v"}).encode())
    assert r["StatusCode"] == 200
    assert r["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in r
    body = json.loads(r["Payload"].read())
    assert body["event"] == {"k": "v"}
    assert body["request_id"] == r["ResponseMetadata"]["RequestId"]


def test_invoke_with_tail_and_client_context(client) -> None:  # type: ignore[no-untyped-def]
    context = base64.b64encode(json.dumps({"custom": {"a": 1}}).encode()).decode()
    r = client.invoke(FunctionName="echo", Payload=b"{}", LogType="Tail", ClientContext=context)
    log = base64.b64decode(r["LogResult"]).decode()
    assert log.startswith("START RequestId: ") and "REPORT RequestId: " in log
    body = json.loads(r["Payload"].read())
    assert body["client_context"]["custom"] == {"a": 1}, body


def test_invoke_function_error(client) -> None:  # type: ignore[no-untyped-def]
    r = client.invoke(FunctionName="raises", Payload=b"{}")
    assert r["StatusCode"] == 200
    assert r["FunctionError"] == "Unhandled"
    assert json.loads(r["Payload"].read())["errorType"] == "KeyError"


def test_dry_run(client) -> None:  # type: ignore[no-untyped-def]
    r = client.invoke(FunctionName="echo", InvocationType="DryRun", Payload=b"{}")
    assert r["StatusCode"] == 204


def test_invoke_by_arn(client) -> None:  # type: ignore[no-untyped-def]
    arn = "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert client.invoke(FunctionName=arn, Payload=b"{}")["StatusCode"] == 200


@pytest.mark.parametrize(("kwargs", "code", "status"), [
    ({"FunctionName": "missing", "Payload": b"{}"}, "ResourceNotFoundException", 404),
    ({"FunctionName": "echo", "Payload": b"{oops"}, "InvalidRequestContentException", 400),
    ({"FunctionName": "echo", "Payload": b"x" * (6 * 1024 * 1024 + 10)},
     "RequestTooLargeException", 413),
])
def test_errors_parse_as_client_errors(client, kwargs, code: str, status: int) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as caught:
        client.invoke(**kwargs)
    error = caught.value.response
    assert error["Error"]["Code"] == code
    assert error["Error"]["Message"]
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
