"""HTTP handlers: API Gateway v2 events in, proxy responses (or plain values) out."""

import base64
import json
import time


def echo(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json", "x-custom": "1"},
            "cookies": ["a=b; Path=/", "c=d"], "body": json.dumps(event)}


def plain(event, context):
    return {"hello": "world"}


def text(event, context):
    return "just a string"


def binary(event, context):
    return {"statusCode": 201, "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}


def bad_status(event, context):
    return {"statusCode": "teapot"}


def raises(event, context):
    raise RuntimeError("boom")


def sleeps(event, context):
    time.sleep(5)


def naps(event, context):
    time.sleep(1.5)
    return {"statusCode": 200, "body": "rested"}
