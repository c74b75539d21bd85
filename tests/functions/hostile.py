"""Handlers that misbehave; each must hurt only its own invocation."""

import os
import signal
import subprocess
import sys
import time


def grows(event, context):
    hoard = []
    while True:
        hoard.append(bytearray(8 * 1024 * 1024))  # zero-filled, so resident at once


def uses(event, context):
    """Allocates ``mb`` and lets it go: the peak of this invocation, not of the worker's life."""
    block = bytearray(event["mb"] * 1024 * 1024)
    del block
    return {"pid": os.getpid()}


def forks_many(event, context):
    """A bounded fork bomb: children that would outlive the invocation if nothing killed them."""
    for _ in range(event.get("n", 30)):
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
    time.sleep(120)


def spawns_and_returns(event, context):
    """A subprocess left running after the handler returns, marked so that the host can find it
    (pids inside the sandbox are not the host's)."""
    marker = f"left-behind-{context.aws_request_id}"
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
    return {"marker": marker}


def leaves_zombies(event, context):
    for _ in range(5):
        subprocess.Popen([sys.executable, "-c", "pass"])
    return {"pid": os.getpid()}


def ignores_sigterm(event, context):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(120)


def closes_fds(event, context):
    os.closerange(3, 1024)
    return "unreachable"


def sleeps_forever(event, context):
    while True:
        time.sleep(1)


def ok(event, context):
    return {"pid": os.getpid()}


def sleeps(event, context):
    time.sleep(event.get("seconds", 0.01))
    return {"pid": os.getpid()}
