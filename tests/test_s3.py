"""S3 triggers end to end: a bucket on moto's server notifies a queue, the daemon polls it and runs
the s3-resize-image blueprint, sandboxed, with the credentials and endpoint [aws] gives functions."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import PIL
import pytest
from conftest import Daemon, function_toml
from moto_server import MotoServer, aws_section, until
from PIL import Image
from test_sqs import arn, counts, events, queue

import router.cli

BLUEPRINT = Path(router.cli.__file__).parent / "blueprints" / "s3-resize-image" / "app.py"
PRINTS = """
import json

def handler(event, context):
    print("EVENT " + json.dumps(event))
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def client(moto: MotoServer, service: str) -> Any:
    return boto3.client(service, endpoint_url=moto.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def aws(endpoint: str) -> str:
    return (aws_section(endpoint).rstrip("\n")
            + '\nfunctions = { access_key_id = "fn-key", secret_access_key = "fn-secret" }\n\n')


def s3_trigger(bucket: str, url: str, prefix: str = "in/") -> str:
    return ('[[functions.triggers]]\ntype = "s3"\n'
            f'bucket = "{bucket}"\nqueue_url = "{url}"\nprefix = "{prefix}"\n'
            'manage_notifications = true\n')


def vendor_pillow(folder: Path) -> None:
    """Pillow in the package, as a build of the blueprint's requirements.txt puts it (the
    function's runtime has boto3 but not Pillow)."""
    shutil.copytree(Path(PIL.__file__).parent, folder / "thumbs" / "PIL")
    for lib in Path(PIL.__file__).parent.parent.glob("pillow.libs"):
        shutil.copytree(lib, folder / "thumbs" / lib.name)


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_an_upload_becomes_one_invocation_with_the_record_as_s3_sent_it(
        make_daemon: Callable[..., Daemon], moto: MotoServer) -> None:
    s3, sqs = client(moto, "s3"), client(moto, "sqs")
    try:
        s3.create_bucket(Bucket="notes")
        url = queue(sqs, "notes-events")
        daemon = make_daemon(aws(moto.endpoint) + function_toml("notes", "prints.handler")
                             + s3_trigger("notes", url), {"functions/prints.py": PRINTS})
        daemon.wait_for_line("bucket notes notifies")
        s3.put_object(Bucket="notes", Key="out/ignored.txt", Body=b"x")
        s3.put_object(Bucket="notes", Key="in/my photo été.txt", Body=b"hello")
        found = until(lambda: events(daemon), what="the upload's event")
        until(lambda: counts(sqs, url) == (0, 0), what="the queue to empty (test event included)")
        assert len(events(daemon)) == 1 and len(found[0]["Records"]) == 1
        record = found[0]["Records"][0]
        assert record["eventSource"] == "aws:s3" and record["eventName"].startswith("ObjectCreated:")
        assert record["s3"]["bucket"]["name"] == "notes"
        # As S3 encodes it, not decoded on the way.
        assert "+" in record["s3"]["object"]["key"] and " " not in record["s3"]["object"]["key"]
        metered = [r for r in daemon.records() if r["function"] == "notes"]
        assert [(r["source"], r["source_arn"]) for r in metered] == [("s3", "arn:aws:s3:::notes")]
    finally:
        s3.close()
        sqs.close()


def test_the_resize_image_story(make_daemon: Callable[..., Daemon], moto: MotoServer,
                                tmp_path: Path) -> None:
    """Upload under in/, a thumbnail under out/; a non-image ends in the DLQ after its retries;
    nothing runs twice after success."""
    s3, sqs = client(moto, "s3"), client(moto, "sqs")
    try:
        s3.create_bucket(Bucket="photos")
        dlq = queue(sqs, "photos-dlq")
        url = queue(sqs, "photos-events", visibility=2, dlq=(arn("photos-dlq"), 2))
        source = tmp_path / "app.py"
        shutil.copy(BLUEPRINT, source)
        function = function_toml("thumbs", "app.handler", code="thumbs", timeout_s=2, memory_mb=256,
                                 env={"THUMBNAIL_PREFIX": "out/"})
        daemon = make_daemon(aws(moto.endpoint) + function + s3_trigger("photos", url),
                             {"thumbs/app.py": source.read_text()}, before_start=vendor_pillow)
        daemon.wait_for_line("bucket photos notifies")
        s3.put_object(Bucket="photos", Key="in/cat one.png", Body=png((640, 480)))
        s3.put_object(Bucket="photos", Key="in/notes.png", Body=b"not an image at all")
        thumb = until(lambda: s3.list_objects_v2(Bucket="photos", Prefix="out/").get("Contents"),
                      what="the thumbnail")
        assert [o["Key"] for o in thumb] == ["out/cat one.png"]
        data = s3.get_object(Bucket="photos", Key="out/cat one.png")["Body"].read()
        with Image.open(io.BytesIO(data)) as image:
            assert max(image.size) == 128
        dead = until(lambda: sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages"),
                     timeout=30, what="the non-image in the DLQ")
        dead_key = json.loads(dead[0]["Body"])["Records"][0]["s3"]["object"]["key"]
        assert unquote_plus(dead_key) == "in/notes.png"
        records = [r for r in daemon.records() if r["function"] == "thumbs"]
        assert sum(r["outcome"] == "success" for r in records) == 1  # the cat, once
        assert sum(r["outcome"] != "success" for r in records) == 2  # the non-image, twice
        # The function's credentials are the ones [aws].functions gives it, never in its config.
        config = daemon.request("GET", "/2015-03-31/functions/thumbs").json()
        assert "fn-secret" not in json.dumps(config)
        assert not any("fn-secret" in line for line in daemon.lines)
    finally:
        s3.close()
        sqs.close()


MINIO_EVENT = {"EventName": "s3:ObjectCreated:Put", "Key": "drop/in/a b.txt", "Records": [
    {"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventName": "s3:ObjectCreated:Put",
     "s3": {"bucket": {"name": "drop"}, "object": {"key": "in%2Fa+b.txt", "size": 3}}},
    {"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
     "s3": {"bucket": {"name": "drop"}, "object": {"key": "elsewhere%2Fc.txt", "size": 3}}}]}


def test_the_webhook_takes_s3_events_pushed_with_a_token(make_daemon: Callable[..., Daemon]) -> None:
    trigger = '[[functions.triggers]]\ntype = "s3"\nbucket = "drop"\nprefix = "in/"\nname = "drops"\n'
    daemon = make_daemon(function_toml("drop", "prints.handler") + trigger,
                         {"functions/prints.py": PRINTS}, server='tokens = ["s3-secret"]')
    body = json.dumps(MINIO_EVENT).encode()
    assert daemon.request("POST", "/events/s3/drops", body).status == 403  # no token
    wrong = daemon.request("POST", "/events/s3/drops", body, {"Authorization": "Bearer nope"})
    assert wrong.status == 403
    token = {"Authorization": "Bearer s3-secret"}
    assert daemon.request("POST", "/events/s3/other", body, token).status == 404
    assert daemon.request("POST", "/events/s3/drops", b"{not json", token).status == 400
    r = daemon.request("POST", "/events/s3/drops", body, token)
    assert r.status == 200 and r.json() == {"invoked": 1, "failed": 0, "ignored": 1}
    found = until(lambda: events(daemon), what="the pushed event")  # logs are flushed in batches
    assert [e["Records"][0]["s3"]["object"]["key"] for e in found] == ["in%2Fa+b.txt"]
    metered = [x for x in daemon.records() if x["function"] == "drop"]
    assert [(x["source"], x["source_arn"]) for x in metered] == [("s3", "arn:aws:s3:::drop")]
