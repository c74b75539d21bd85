"""Handlers that end every way an invocation can end."""

import os
import signal
import sys
import time

counter = 0


def echo(event, context):
    return {
        "event": event,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "identity": [context.identity.cognito_identity_id,
                     context.identity.cognito_identity_pool_id],
        "client_context": None if context.client_context is None else {
            "installation_id": context.client_context.client
            and context.client_context.client.installation_id,
            "custom": context.client_context.custom,
            "env": context.client_context.env,
        },
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }


def count(event, context):
    global counter
    counter += 1
    return {"counter": counter, "pid": os.getpid()}


def raises(event, context):
    return event["action"]  # KeyError on an event without "action"


def sleeps(event, context):
    time.sleep(event.get("seconds", 30))
    return {"slept": event.get("seconds", 30)}


def exits(event, context):
    how = event["how"]
    if how == "os_exit":
        os._exit(3)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "sys_exit":
        sys.exit(2)
    return "survived"


def unserialisable(event, context):
    return {"when": object()}


def returns(event, context):
    return event["value"]
