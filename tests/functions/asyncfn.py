"""Handlers for asynchronous invocation tests: each prints what it got as one line."""

import json
import time
from pathlib import Path


def records(event, context):
    print("EVENT " + json.dumps({"event": event, "request_id": context.aws_request_id}))
    return {"got": event}


def flaky(event, context):
    """Fails the first ``event["failures"]`` times it sees ``event["key"]`` (counted in the
    sandbox's /tmp, which the function's workers share)."""
    path = Path(f"/tmp/attempts-{event['key']}")
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    print("EVENT " + json.dumps({"event": event, "request_id": context.aws_request_id}))
    if seen < event["failures"]:
        raise RuntimeError(f"failure {seen + 1}")
    return {"attempts": seen + 1}


def fails(event, context):
    raise ValueError("always")


def destination(event, context):
    print("DESTINATION " + json.dumps(event))


def slow(event, context):
    time.sleep(event.get("sleep", 0.01))
    print("EVENT " + json.dumps({"event": event, "request_id": context.aws_request_id}))
