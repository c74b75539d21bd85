"""Sample events (sources.samples), function folders from blueprints (router.cli.scaffold), and each
blueprint's handler run on its own event.json; the image resizer against a real S3 (moto server)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import logging
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import unquote_plus

import pytest

from router.cli.scaffold import BLUEPRINTS, ScaffoldError, create, handler_of, launch_of
from sources.samples import KINDS, sample_event

NOW = datetime(2020, 3, 12, 19, 3, 58, 390000, tzinfo=UTC)
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ISO_S = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
CLF = re.compile(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000")


def get(event: dict[str, Any], path: str) -> Any:
    """``get(e, "Records.0.s3.bucket.name")``: follow dotted keys and list indexes."""
    value: Any = event
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


# --- sources.samples ---------------------------------------------------------------------------

Want = type | str | bool | re.Pattern[str]

S3_FIELDS: list[tuple[str, Want]] = [
    ("Records.0.eventVersion", "2.1"),
    ("Records.0.eventSource", "aws:s3"),
    ("Records.0.awsRegion", "us-east-1"),
    ("Records.0.eventTime", ISO_MS),
    ("Records.0.userIdentity.principalId", str),
    ("Records.0.requestParameters.sourceIPAddress", str),
    ("Records.0.responseElements.x-amz-request-id", str),
    ("Records.0.responseElements.x-amz-id-2", str),
    ("Records.0.s3.s3SchemaVersion", "1.0"),
    ("Records.0.s3.configurationId", str),
    ("Records.0.s3.bucket.name", "amzn-s3-demo-bucket"),
    ("Records.0.s3.bucket.ownerIdentity.principalId", str),
    ("Records.0.s3.bucket.arn", "arn:aws:s3:::amzn-s3-demo-bucket"),
    ("Records.0.s3.object.key", str),
    ("Records.0.s3.object.sequencer", re.compile(r"[0-9A-F]{16,}")),
]

FIELDS: dict[str, list[tuple[str, Want]]] = {
    "s3-put": [*S3_FIELDS,
               ("Records.0.eventName", "ObjectCreated:Put"),
               ("Records.0.s3.object.size", int),
               ("Records.0.s3.object.eTag", re.compile(r"[0-9a-f]{32}"))],
    "s3-delete": [*S3_FIELDS, ("Records.0.eventName", "ObjectRemoved:Delete")],
    "sqs": [
        ("Records.0.messageId", re.compile(r"[0-9a-f-]{36}")),
        ("Records.0.receiptHandle", re.compile(r"AQEB\S+")),
        ("Records.0.body", str),
        ("Records.0.attributes.ApproximateReceiveCount", "1"),
        ("Records.0.attributes.SentTimestamp", re.compile(r"\d{13}")),
        ("Records.0.attributes.SenderId", re.compile(r"AIDA[A-Z0-9]{17}")),
        ("Records.0.attributes.ApproximateFirstReceiveTimestamp", re.compile(r"\d{13}")),
        ("Records.0.messageAttributes", dict),
        ("Records.0.md5OfBody", re.compile(r"[0-9a-f]{32}")),
        ("Records.0.eventSource", "aws:sqs"),
        ("Records.0.eventSourceARN", "arn:aws:sqs:us-east-1:123456789012:my-queue"),
        ("Records.0.awsRegion", "us-east-1"),
    ],
    "api-v2": [
        ("version", "2.0"),
        ("routeKey", "$default"),
        ("rawPath", "/my/path"),
        ("rawQueryString", str),
        ("headers", dict),
        ("queryStringParameters", dict),
        ("requestContext.accountId", "123456789012"),
        ("requestContext.apiId", re.compile(r"[a-z0-9]{10}")),
        ("requestContext.domainName", re.compile(r"[a-z0-9]{10}\.execute-api\.us-east-1\.amazonaws\.com")),
        ("requestContext.domainPrefix", str),
        ("requestContext.http.method", "POST"),
        ("requestContext.http.path", "/my/path"),
        ("requestContext.http.protocol", "HTTP/1.1"),
        ("requestContext.http.sourceIp", re.compile(r"[\d.]+")),
        ("requestContext.http.userAgent", str),
        ("requestContext.requestId", str),
        ("requestContext.routeKey", "$default"),
        ("requestContext.stage", "$default"),
        ("requestContext.time", CLF),
        ("requestContext.timeEpoch", int),
        ("body", str),
        ("isBase64Encoded", False),
    ],
    "schedule": [
        ("version", "0"),
        ("id", re.compile(r"[0-9a-f-]{36}")),
        ("detail-type", "Scheduled Event"),
        ("source", "aws.events"),
        ("account", "123456789012"),
        ("time", ISO_S),
        ("region", "us-east-1"),
        ("resources.0", "arn:aws:events:us-east-1:123456789012:rule/my-schedule"),
        ("detail", dict),
    ],
}


@pytest.mark.parametrize(("kind", "path", "want"),
                         [(kind, path, want) for kind in KINDS for path, want in FIELDS[kind]])
def test_sample_event_fields(kind: str, path: str, want: Want) -> None:
    value = get(sample_event(kind), path)
    if isinstance(want, type):
        assert isinstance(value, want), (path, value)
    elif isinstance(want, re.Pattern):
        assert isinstance(value, str) and want.fullmatch(value), (path, value)
    else:
        assert value == want, path


def test_every_kind_has_a_table() -> None:
    assert set(FIELDS) == set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_events_are_plain_json(kind: str) -> None:
    event = sample_event(kind)
    assert json.loads(json.dumps(event)) == event


def test_unknown_kind_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="s3-put, s3-delete, sqs, api-v2, schedule"):
        sample_event("kinesis")


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="queue"):
        sample_event("s3-put", queue="q")


def test_delete_event_has_no_size_or_etag() -> None:
    obj = sample_event("s3-delete")["Records"][0]["s3"]["object"]
    assert set(obj) == {"key", "sequencer"}


@pytest.mark.parametrize(("key", "encoded"), [
    ("HappyFace.jpg", "HappyFace.jpg"),
    ("my photo.jpg", "my+photo.jpg"),
    ("photos/2024 summer/a b+c.png", "photos/2024+summer/a+b%2Bc.png"),
    ("café.jpg", "caf%C3%A9.jpg"),
])
def test_s3_key_is_form_url_encoded(key: str, encoded: str) -> None:
    got = sample_event("s3-put", key=key)["Records"][0]["s3"]["object"]["key"]
    assert got == encoded
    assert unquote_plus(got) == key


def test_s3_overrides_and_times() -> None:
    record = sample_event("s3-put", bucket="photos", size=7, region="eu-west-1", now=NOW)["Records"][0]
    assert record["awsRegion"] == "eu-west-1"
    assert record["eventTime"] == "2020-03-12T19:03:58.390Z"
    bucket = record["s3"]["bucket"]
    assert (bucket["name"], bucket["arn"]) == ("photos", "arn:aws:s3:::photos")
    assert record["s3"]["object"]["size"] == 7


@pytest.mark.parametrize("body", ["Hello from SQS!", "", '{"a": 1}', "héllo ✓"])
def test_sqs_md5_of_body(body: str) -> None:
    record = sample_event("sqs", body=body)["Records"][0]
    assert record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()


def test_sqs_overrides() -> None:
    records = sample_event("sqs", queue="orders", region="eu-west-1", count=3, now=NOW)["Records"]
    assert len(records) == 3
    assert len({r["messageId"] for r in records}) == 3
    assert all(uuid.UUID(r["messageId"]).version == 4 for r in records)
    assert {r["eventSourceARN"] for r in records} == {"arn:aws:sqs:eu-west-1:123456789012:orders"}
    assert {r["awsRegion"] for r in records} == {"eu-west-1"}
    assert records[0]["attributes"]["SentTimestamp"] == "1584039838390"
    with pytest.raises(ValueError, match="at least one"):
        sample_event("sqs", count=0)


@pytest.mark.parametrize(("query", "want"), [
    ("parameter1=value1&parameter1=value2&parameter2=value",
     {"parameter1": "value1,value2", "parameter2": "value"}),
    ("a=1&b=2&a=3", {"a": "1,3", "b": "2"}),
    ("q=hello%20world&empty=", {"q": "hello world", "empty": ""}),
])
def test_api_v2_query_parameters(query: str, want: dict[str, str]) -> None:
    event = sample_event("api-v2", query=query)
    assert event["rawQueryString"] == query
    assert event["queryStringParameters"] == want


def test_api_v2_without_query_body_or_cookies_omits_them() -> None:
    event = sample_event("api-v2", method="get", query="", body=None)
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event
    assert "body" not in event
    assert "cookies" not in event
    assert event["requestContext"]["http"]["method"] == "GET"


def test_api_v2_overrides() -> None:
    event = sample_event("api-v2", method="PUT", path="/items/7", body="x=1", now=NOW,
                         headers={"X-Custom": "a", "x-custom": "b", "User-Agent": "test/1",
                                  "Cookie": "session=abc; theme=dark"})
    assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/items/7"
    assert event["requestContext"]["http"]["method"] == "PUT"
    assert event["body"] == "x=1"
    assert all(name == name.lower() for name in event["headers"])
    assert event["headers"]["x-custom"] == "a,b"
    assert event["headers"]["content-length"] == "3"
    assert event["requestContext"]["http"]["userAgent"] == "test/1"
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert event["requestContext"]["time"] == "12/Mar/2020:19:03:58 +0000"
    assert event["requestContext"]["timeEpoch"] == 1584039838390


def test_schedule_overrides() -> None:
    event = sample_event("schedule", rule="nightly", region="ap-southeast-2", now=NOW)
    assert event["resources"] == ["arn:aws:events:ap-southeast-2:123456789012:rule/nightly"]
    assert event["region"] == "ap-southeast-2"
    assert event["time"] == "2020-03-12T19:03:58Z"


def test_times_default_to_now() -> None:
    before = datetime.now(UTC).timestamp() * 1000
    epoch = sample_event("api-v2")["requestContext"]["timeEpoch"]
    assert before - 1 <= epoch <= datetime.now(UTC).timestamp() * 1000 + 1


# --- router.cli.scaffold -------------------------------------------------------------------------


def test_blueprints_are_discovered() -> None:
    assert BLUEPRINTS == ("hello", "http-api", "nodejs-hello", "provided-shell", "s3-resize-image",
                          "scheduled", "sqs-consumer")


PYTHON_BLUEPRINTS = [b for b in BLUEPRINTS if b not in ("nodejs-hello", "provided-shell")]


@pytest.mark.parametrize("blueprint", PYTHON_BLUEPRINTS)
def test_create_makes_a_function_folder(tmp_path: Path, blueprint: str) -> None:
    folder = create("my-func_1", blueprint, tmp_path)
    assert folder == tmp_path / "my-func_1"
    names = {p.name for p in folder.iterdir()}
    assert {"app.py", "event.json"} <= names <= {"app.py", "event.json", "requirements.txt"}
    assert "def handler(event, context):" in (folder / "app.py").read_text()
    json.loads((folder / "event.json").read_text())
    assert launch_of(blueprint) == (f"python3.{sys.version_info.minor}", "app.handler")


@pytest.mark.parametrize(("blueprint", "files", "runtime", "handler"), [
    ("nodejs-hello", {"index.mjs", "event.json"}, "nodejs", "index.handler"),
    ("provided-shell", {"bootstrap", "function.sh", "event.json"}, "provided.al2023",
     "function.handler"),
])
def test_blueprints_of_the_other_runtimes(tmp_path: Path, blueprint: str, files: set[str],
                                          runtime: str, handler: str) -> None:
    folder = create("fn", blueprint, tmp_path)
    assert {p.name for p in folder.iterdir()} == files
    assert launch_of(blueprint)[0].startswith(runtime) and handler_of(blueprint) == handler
    if "bootstrap" in files:
        assert (folder / "bootstrap").stat().st_mode & 0o777 == 0o755


def test_only_the_image_resizer_needs_requirements(tmp_path: Path) -> None:
    needs = {b for b in PYTHON_BLUEPRINTS if (create(b, b, tmp_path) / "requirements.txt").exists()}
    assert needs == {"s3-resize-image"}
    assert "Pillow" in (tmp_path / "s3-resize-image" / "requirements.txt").read_text()


def test_create_uses_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    assert (create("fn", "hello", tmp_path) / "app.py").is_file()


def test_create_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "fn").mkdir()
    (tmp_path / "fn" / "mine.py").write_text("keep me")
    with pytest.raises(ScaffoldError, match="already exists and is not empty"):
        create("fn", "hello", tmp_path)
    assert [p.name for p in (tmp_path / "fn").iterdir()] == ["mine.py"]


def test_create_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "fn").write_text("")
    with pytest.raises(ScaffoldError, match="not a folder"):
        create("fn", "hello", tmp_path)


@pytest.mark.parametrize("name", ["", "a" * 65, "my func", "../escape", "fn.py", "é", "a/b"])
def test_create_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ScaffoldError, match="invalid function name"):
        create(name, "hello", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_create_refuses_unknown_blueprints(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="unknown blueprint 'nope'; choose one of: hello, http-api"):
        create("fn", "nope", tmp_path)
    with pytest.raises(ScaffoldError, match="unknown blueprint"):
        handler_of("nope")
    assert list(tmp_path.iterdir()) == []


# --- the blueprints' handlers ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    # Blueprints set the root logger's level at import, as Lambda functions do.
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def load_handler(folder: Path) -> ModuleType:
    """Import ``folder/app.py`` under a name of its own, so blueprints' ``app`` modules never clash."""
    spec = importlib.util.spec_from_file_location(f"blueprint_{folder.name.replace('-', '_')}",
                                                  folder / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context() -> SimpleNamespace:
    return SimpleNamespace(aws_request_id=str(uuid.uuid4()), function_name="fn",
                           get_remaining_time_in_millis=lambda: 3000)


def run_blueprint(blueprint: str, tmp_path: Path, event: Any = None) -> Any:
    folder = create(blueprint, blueprint, tmp_path)
    if event is None:
        event = json.loads((folder / "event.json").read_text())
    return load_handler(folder).handler(event, context())


def test_hello(tmp_path: Path) -> None:
    assert run_blueprint("hello", tmp_path) == {"message": "Hello, Headwater!"}


def test_http_api(tmp_path: Path) -> None:
    result = run_blueprint("http-api", tmp_path)
    assert result["statusCode"] == 200
    assert result["headers"] == {"content-type": "application/json"}
    body = json.loads(result["body"])
    assert body["path"] == "/items/42"
    assert body["pathParameters"] == {"id": "42"}
    assert body["query"] == {"color": "red,blue", "size": "m"}
    assert body["method"] == "GET"


def test_http_api_on_a_default_route(tmp_path: Path) -> None:
    event = sample_event("api-v2", path="/x", query="")
    body = json.loads(run_blueprint("http-api", tmp_path, event)["body"])
    assert (body["path"], body["pathParameters"], body["query"]) == ("/x", {}, {})


def test_scheduled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert run_blueprint("scheduled", tmp_path) == {"ran_at": "2025-03-12T19:03:58Z"}
    assert "2025-03-12T19:03:58Z" in caplog.text


def test_sqs_consumer_sample_batch_succeeds(tmp_path: Path) -> None:
    assert run_blueprint("sqs-consumer", tmp_path) == {"batchItemFailures": []}


def test_sqs_consumer_reports_exactly_the_bad_messages(tmp_path: Path) -> None:
    bodies = ['{"order": 1}', "not json", "[1, 2]", "{truncated", '"a string"', ""]
    records = [sample_event("sqs", body=body)["Records"][0] for body in bodies]
    result = run_blueprint("sqs-consumer", tmp_path, {"Records": records})
    bad = [records[i]["messageId"] for i in (1, 3, 5)]
    assert result == {"batchItemFailures": [{"itemIdentifier": m} for m in bad]}


# --- s3-resize-image against a real S3 API ---------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def png(width: int, height: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("thumbnail_bucket", [None, "thumbs"])
def test_s3_resize_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_endpoint: str,
                         thumbnail_bucket: str | None) -> None:
    import boto3
    from PIL import Image

    # Given: the environment a function gets, pointing boto3 at the moto server before the
    # function's module creates its client.
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "THUMBNAIL_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    if thumbnail_bucket:
        monkeypatch.setenv("THUMBNAIL_BUCKET", thumbnail_bucket)
    folder = create("resize", "s3-resize-image", tmp_path)
    event = json.loads((folder / "event.json").read_text())
    bucket = event["Records"][0]["s3"]["bucket"]["name"]
    key = unquote_plus(event["Records"][0]["s3"]["object"]["key"])
    assert " " in key  # the event says "photos/happy+face.png"
    target = thumbnail_bucket or f"{bucket}-resized"

    s3 = boto3.client("s3")
    for name in {bucket, target}:
        if name not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=bucket, Key=key, Body=png(640, 320))

    # When: S3 notifies the function of the upload.
    written = load_handler(folder).handler(event, context())

    # Then: the thumbnail is in the target bucket under the same key, at most 128x128.
    assert written == [key]
    thumbnail = s3.get_object(Bucket=target, Key=key)
    assert thumbnail["ContentType"] == "image/png"
    with Image.open(io.BytesIO(thumbnail["Body"].read())) as image:
        assert image.format == "PNG"
        assert image.size == (128, 64)
