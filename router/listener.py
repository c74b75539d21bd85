"""The daemon's listening sockets, and how they close without resetting a connection.

Closing a listening socket resets every connection the kernel has queued on it but the daemon has
not accepted yet, and every handshake still under way: under steady load there are always some,
and each is a client whose request got no answer. So the close happens in steps. A socket filter
drops every segment without ACK, that is a new handshake's SYN: the client gets no answer and
tries again, by which time the port is closed (a refused connection, which a client or balancer
retries elsewhere, not a reset one), while handshakes already under way complete (their ACK
passes). After a moment for those, the connections queued are accepted and served like the rest
(during the drain, a 503 with ``Connection: close``); then the socket closes with its queue empty.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct

SO_ATTACH_FILTER = 26  # linux/socket.h; Python's socket module does not name it
LDB_ABS, JSET, RET = 0x30, 0x45, 0x06  # classic BPF (linux/filter.h)
TCP_FLAGS_OFFSET, ACK = 13, 0x10  # a TCP socket's filter sees the segment from its TCP header
# ldb [13]; jset #ACK, keep, drop: keep (the whole segment) what has ACK set, drop the rest.
SYN_FILTER = b"".join(struct.pack("<HBBI", *op) for op in (
    (LDB_ABS, 0, 0, TCP_FLAGS_OFFSET), (JSET, 0, 1, ACK), (RET, 0, 0, 0xFFFFFFFF), (RET, 0, 0, 0)))
BACKLOG = 1024
HANDSHAKE_S = 0.05  # how long handshakes under way get to complete once new ones are refused


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for ``host`` (an address, or a name: one socket per address it has) and
    ``port``; raises ``OSError``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(
                (i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "::" must not also take the IPv4 port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def refuse_new(sock: socket.socket) -> None:
    """Make the kernel drop the SYN of every new connection to ``sock``. (Connections accepted
    later inherit the filter, which keeps every segment of theirs: each carries an ACK.)"""
    program = ctypes.create_string_buffer(SYN_FILTER)
    fprog = struct.pack("@HP", len(SYN_FILTER) // 8, ctypes.addressof(program))  # sock_fprog
    with contextlib.suppress(OSError):  # no socket filters here: the old close, resets and all
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def take_queued(sock: socket.socket) -> list[socket.socket]:
    """The connections the kernel has queued on ``sock`` and nobody has accepted yet."""
    taken = []
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # none left (EAGAIN); or out of descriptors: the rest are reset, as before
            return taken
        conn.setblocking(False)
        taken.append(conn)
