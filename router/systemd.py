"""``sd_notify`` without libsystemd: one datagram to ``$NOTIFY_SOCKET`` when systemd asks for it,
and the watchdog's keep-alive pings when ``$WATCHDOG_USEC`` asks for them."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping


def notify(environ: Mapping[str, str], state: str) -> None:
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(state.encode(), path)
        except OSError:
            pass  # systemd going away must not stop the daemon


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of systemd's ``WatchdogSec``, if it set one for
    this process (``WATCHDOG_PID``, when given, names the process meant)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0 or environ.get("WATCHDOG_PID", str(pid)) != str(pid):
        return None
    return usec / 2e6


async def watchdog(environ: Mapping[str, str]) -> None:
    """Ping systemd's watchdog for as long as the event loop runs this task on time: a loop that
    is stuck stops the pings, and systemd restarts the daemon."""
    interval = watchdog_interval(environ, os.getpid())
    if interval is None:
        return
    while True:
        notify(environ, "WATCHDOG=1")
        await asyncio.sleep(interval)
