"""AWS's event stream encoding (``application/vnd.amazon.eventstream``), as InvokeWithResponseStream
answers with it: a message is a prelude (total length, headers length, the prelude's CRC32), the
headers, the payload and the whole message's CRC32, all lengths big-endian. Only string headers
(type 7) are needed: ``:event-type``, ``:content-type`` and ``:message-type``.
"""

from __future__ import annotations

import struct
import zlib

import msgspec

STRING = 7  # a header value's type: a string with a 2-byte length
PRELUDE = struct.Struct(">II")
CRC = struct.Struct(">I")
MAX_PAYLOAD = 16 * 1024 * 1024  # what one message may carry (botocore refuses more)


def header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + bytes([STRING]) + struct.pack(">H", len(v)) + v


def encoded(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(header(name, value) for name, value in headers)


def message(headers: list[tuple[str, str]], payload: bytes) -> bytes:
    return framed(encoded(headers), payload)


def event_headers(event_type: str, content_type: str) -> list[tuple[str, str]]:
    return [(":event-type", event_type), (":content-type", content_type),
            (":message-type", "event")]


# Every PayloadChunk has the same headers: encoded once, not for each chunk of a stream.
PAYLOAD_HEADERS = encoded(event_headers("PayloadChunk", "application/octet-stream"))


def framed(headers: bytes, payload: bytes) -> bytes:
    """A message of ``headers`` already encoded and ``payload``."""
    prelude = PRELUDE.pack(PRELUDE.size + CRC.size + len(headers) + len(payload) + CRC.size,
                           len(headers))
    head = prelude + CRC.pack(zlib.crc32(prelude)) + headers
    return head + payload + CRC.pack(zlib.crc32(payload, zlib.crc32(head)))


def payload_chunks(data: bytes) -> list[bytes]:
    """``PayloadChunk`` events carrying ``data`` (more than one only past a message's limit)."""
    return [framed(PAYLOAD_HEADERS, data[at:at + MAX_PAYLOAD])
            for at in range(0, len(data), MAX_PAYLOAD)]


class InvokeComplete(msgspec.Struct, omit_defaults=True):
    ErrorCode: str | None = None
    ErrorDetails: str | None = None
    LogResult: str | None = None


def invoke_complete(error_code: str | None = None, error_details: str | None = None,
                    log_result: str | None = None) -> bytes:
    """The ``InvokeComplete`` event that ends the stream."""
    body = msgspec.json.encode(InvokeComplete(error_code, error_details, log_result))
    return message(event_headers("InvokeComplete", "application/json"), body)
