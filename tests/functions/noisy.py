"""Handlers that print every way a process can, to prove nothing reaches the router's channel."""

import logging
import os
import sys

logger = logging.getLogger()
logger.setLevel(logging.INFO)


def prints(event, context):
    print("hello from print")
    sys.stderr.write("to stderr\n")
    os.write(1, b"raw fd 1 write\n")
    os.write(2, b"\x00\x00\x00\x10{\"type\":\"ready\"}\n")  # looks like a frame; is not one
    logger.info("logged at info")
    print("no newline at the end", end="")
    return {"ok": True}


def floods(event, context):
    line = "x" * 1023 + "\n"
    for _ in range(event.get("kib", 1024)):
        sys.stdout.write(line)
    return {"ok": True}


def closes_stdout(event, context):
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass  # closed by the previous invocation of this worker
    try:
        print("into a closed stdout")
    except OSError:
        pass
    return {"ok": True, "pid": os.getpid()}


def closes_stdout_then_raises(event, context):
    os.close(1)
    raise ValueError("the error log goes nowhere, the error object still comes back")
