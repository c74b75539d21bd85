"""``sd_notify`` without libsystemd: one datagram to ``$NOTIFY_SOCKET`` when systemd asks for it."""

from __future__ import annotations

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
