"""Sample events, shaped field for field as AWS sends them, for ``headwater event generate KIND``.

The shapes follow the AWS documentation: S3 notification content structure, the Lambda
developer guide's SQS and EventBridge (scheduled) events, and API Gateway HTTP API payload 2.0.
Ids are fresh random values each call (but a schedule's, which is its tick's, built by
``sources.schedule`` from the rule and the time); times are the current UTC time unless ``now=``
is given.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import msgspec

from sources import apigw
from sources.schedule import rule_arn, scheduled_event

# The placeholder account id and region the AWS documentation uses.
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"


def sample_event(kind: str, **overrides: Any) -> dict[str, Any]:
    """A sample event of ``kind`` (one of ``KINDS``), with ``overrides`` applied.

    Every kind accepts ``now`` (an aware datetime); the others are, by kind:
    s3-put/s3-delete: bucket, key, size, region; sqs: body, queue, region, count;
    api-v2: method, path, body, query, headers, region; schedule: rule, region.
    """
    try:
        build = BUILDERS[kind]
    except KeyError:
        raise ValueError(f"unknown event kind {kind!r}; valid kinds: {', '.join(KINDS)}") from None
    accepted = inspect.signature(build).parameters
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} events take no {', '.join(unknown)}; "
                         f"they take: {', '.join(accepted)}")
    if overrides.get("now") is None:
        overrides["now"] = datetime.now(UTC)
    return build(**overrides)


# --- helpers ---------------------------------------------------------------------------------


def arn(service: str, region: str, resource: str, account: str = ACCOUNT_ID) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def s3_bucket_arn(bucket: str) -> str:
    # Bucket ARNs carry neither region nor account.
    return f"arn:aws:s3:::{bucket}"


def iso_time(now: datetime) -> str:
    """``2019-09-03T19:37:27.192Z``, as S3 writes its event times."""
    now = now.astimezone(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S") + f".{now.microsecond // 1000:03d}Z"


def epoch_ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def s3_key(key: str) -> str:
    """The key as S3 puts it in a notification: form-URL-encoded (a space is ``+``), ``/`` kept."""
    return quote_plus(key, safe="/")


def _token(nbytes: int) -> str:
    return base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _principal_id() -> str:
    # An IAM user's unique id: "AIDA" and 17 upper-case letters and digits.
    return "AIDA" + base64.b32encode(secrets.token_bytes(11)).decode()[:17]


# --- the events ------------------------------------------------------------------------------


def s3_event(event_name: str, *, now: datetime, bucket: str = "amzn-s3-demo-bucket",
             key: str = "HappyFace.jpg", size: int = 1024, region: str = REGION) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": s3_key(key)}
    if event_name.startswith("ObjectCreated:"):
        # A delete notification has no size or eTag: the object is gone.
        obj["size"] = size
        obj["eTag"] = secrets.token_hex(16)
    obj["sequencer"] = secrets.token_hex(9).upper()
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": iso_time(now),
        "eventName": event_name,
        "userIdentity": {"principalId": f"AWS:{_principal_id()}"},
        "requestParameters": {"sourceIPAddress": "198.51.100.7"},
        "responseElements": {
            "x-amz-request-id": secrets.token_hex(8).upper(),
            "x-amz-id-2": _token(57),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "headwater-notification",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": base64.b32encode(secrets.token_bytes(9)).decode()[:14]},
                "arn": s3_bucket_arn(bucket),
            },
            "object": obj,
        },
    }
    return {"Records": [record]}


def s3_put(*, now: datetime, bucket: str = "amzn-s3-demo-bucket", key: str = "HappyFace.jpg",
           size: int = 1024, region: str = REGION) -> dict[str, Any]:
    return s3_event("ObjectCreated:Put", now=now, bucket=bucket, key=key, size=size, region=region)


def s3_delete(*, now: datetime, bucket: str = "amzn-s3-demo-bucket", key: str = "HappyFace.jpg",
              region: str = REGION) -> dict[str, Any]:
    return s3_event("ObjectRemoved:Delete", now=now, bucket=bucket, key=key, region=region)


def sqs(*, now: datetime, body: str = "Hello from SQS!", queue: str = "my-queue", region: str = REGION,
        count: int = 1) -> dict[str, Any]:
    if count < 1:
        raise ValueError(f"an SQS batch has at least one record, not {count}")
    sent = epoch_ms(now)
    sender = _principal_id()

    def record() -> dict[str, Any]:
        return {
            "messageId": str(uuid.uuid4()),
            "receiptHandle": "AQEB" + _token(150),
            "body": body,
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": str(sent),
                "SenderId": sender,
                "ApproximateFirstReceiveTimestamp": str(sent + 2),
            },
            "messageAttributes": {},
            "md5OfBody": md5_hex(body),
            "eventSource": "aws:sqs",
            "eventSourceARN": arn("sqs", region, queue),
            "awsRegion": region,
        }

    return {"Records": [record() for _ in range(count)]}


def api_v2(*, now: datetime, method: str = "POST", path: str = "/my/path",
           body: str | None = '{"message": "hello"}',
           query: str = "parameter1=value1&parameter1=value2&parameter2=value",
           headers: Mapping[str, str] | None = None, region: str = REGION) -> dict[str, Any]:
    """A function URL request as the daemon's own HTTP source shapes it (``sources.apigw``), from
    a request that looks as if it came through API Gateway."""
    api_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
    source_ip = "198.51.100.7"
    sent = {
        "accept": "*/*",
        "host": f"{api_id}.execute-api.{region}.amazonaws.com",
        "user-agent": "curl/8.5.0",
        "x-amzn-trace-id": f"Root=1-{int(now.timestamp()):08x}-{secrets.token_hex(12)}",
        "x-forwarded-for": source_ip,
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
    }
    if body:
        sent["content-length"] = str(len(body.encode()))
        sent["content-type"] = "application/json"
    given = dict(headers or {})
    overridden = {name.lower() for name in given}
    request = apigw.HttpRequest(
        method=method.upper(), raw_path=path if path.startswith("/") else "/" + path, raw_query=query,
        headers=(*((k, v) for k, v in sent.items() if k not in overridden), *given.items()),
        body=(body or "").encode(), source_ip=source_ip)
    event = msgspec.to_builtins(apigw.build_event(
        request, route_key="$default", path_params={}, request_id=_token(11),
        account_id=ACCOUNT_ID, api_id=api_id, now=now.timestamp()))
    # A sample is read by people: keys in the order AWS's documentation shows them.
    return {key: event[key] for key in AWS_V2_ORDER if key in event} | event


AWS_V2_ORDER = ("version", "routeKey", "rawPath", "rawQueryString", "cookies", "headers",
                "queryStringParameters", "requestContext", "body", "pathParameters",
                "isBase64Encoded", "stageVariables")


def schedule(*, now: datetime, rule: str = "my-schedule", region: str = REGION) -> dict[str, Any]:
    event = scheduled_event(rule_arn(region, ACCOUNT_ID, rule), now, account=ACCOUNT_ID, region=region)
    return msgspec.to_builtins(event)


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "s3-put": s3_put,
    "s3-delete": s3_delete,
    "sqs": sqs,
    "api-v2": api_v2,
    "schedule": schedule,
}
KINDS = tuple(BUILDERS)
