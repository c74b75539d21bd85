"""The example function: greets whoever the event names."""

import os

GREETING = os.environ.get("GREETING", "hello")
invocations = 0  # module state survives between invocations of one warm worker


def handler(event, context):
    global invocations
    invocations += 1
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    print(f"greeting {name}")
    return {
        "message": f"{GREETING}, {name}!",
        "request_id": context.aws_request_id,
        "invocations_of_this_worker": invocations,
    }
