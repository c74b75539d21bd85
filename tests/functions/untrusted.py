"""Handlers that speak the router's protocol themselves, as an attacker inside a worker would: each
finds the worker's frame pipe among its own descriptors and writes to it what it likes."""

import json
import os
import struct
import threading
import time

FORGED_RESULT = {"type": "result", "ok": True, "error_type": None, "duration_ms": 0.001,
                 "max_memory_mb": 1, "output_pending": False, "payload": {"forged": True}}
FRAMES = {
    "result": json.dumps(FORGED_RESULT).encode(),
    "ready": b'{"type": "ready"}',
    "init_error": b'{"type": "init_error", "error_type": "Forged", "payload": {}}',
    "unknown": b'{"type": "surprise"}',
    "garbage": b"\xff\xfe not a frame",
}


def frame_fd() -> int:
    """The pipe to the router: one this process may write to that is not its stdout."""
    stdout = os.readlink("/proc/self/fd/1")
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
            with open(f"/proc/self/fdinfo/{name}") as info:
                flags = int(next(line for line in info if line.startswith("flags:")).split()[1], 8)
        except (OSError, StopIteration):
            continue
        if link.startswith("pipe:") and link != stdout and flags & os.O_ACCMODE == os.O_WRONLY:
            return int(name)
    raise RuntimeError("no frame pipe found")


def send(body: bytes) -> None:
    os.write(frame_fd(), struct.pack(">I", len(body)) + body)


def forges(event, context):
    """Writes the frame ``send`` names, then returns (``result``) or lingers as if still working."""
    time.sleep(event.get("sleep", 0))
    kind = event.get("send")
    if kind == "huge":  # a 4 GiB frame, of which only the start ever comes
        os.write(frame_fd(), struct.pack(">I", 2**32 - 1) + b"x" * 1000)
    elif kind == "late_result":  # a result after this invocation's own, while nothing is in flight
        threading.Thread(target=lambda: (time.sleep(0.2), send(FRAMES["result"]))).start()
    elif kind is not None:
        send(FRAMES[kind])
    if kind not in (None, "result", "late_result"):
        time.sleep(30)  # past the timeout: only a kill for the frame ends this invocation early
    return {"pid": os.getpid()}


def no_newline(event, context):
    """``mb`` megabytes of output without a single newline, a megabyte each 5 ms."""
    chunk = b"x" * 65536
    for i in range(event["mb"] * 16):
        os.write(1, chunk)
        if i % 16 == 15:
            time.sleep(0.005)
    return {"pid": os.getpid()}


def chatty(event, context):
    """``mb`` megabytes of 1 KiB lines."""
    line = "y" * 1023 + "\n"
    for _ in range(event["mb"] * 1024):
        os.write(1, line.encode())
    return {"pid": os.getpid()}
