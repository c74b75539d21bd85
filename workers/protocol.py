"""The frames between the router and a worker, as msgspec Structs.

A frame is a 4-byte big-endian length and a JSON document. JSON rather than msgpack because the worker
side (``bootstrap.py``) runs under whatever Python the function names and so has only the standard
library; payloads ride inline as ``msgspec.Raw``, so the router never decodes an event or a result.
"""

from __future__ import annotations

import struct

import msgspec

HEADER = struct.Struct(">I")
MAX_RESPONSE = 6_291_556  # bytes of result Lambda returns from a synchronous invocation
# A result frame is its payload plus a JSON head (type, flags, the error type): a frame declared
# longer than this is not one an honest worker sends, and is refused before it is read.
MAX_FRAME = MAX_RESPONSE + (1 << 16)


class Invoke(msgspec.Struct, tag="invoke", tag_field="type"):
    request_id: str
    deadline_ms: int
    arn: str
    payload: msgspec.Raw
    client_context: msgspec.Raw | None = None
    trace_id: str | None = None


class Ready(msgspec.Struct, tag="ready", tag_field="type"):
    pass


class InitError(msgspec.Struct, tag="init_error", tag_field="type"):
    error_type: str
    payload: msgspec.Raw


class Result(msgspec.Struct, tag="result", tag_field="type"):
    # No duration: the router times the invocation itself (a worker could claim anything).
    ok: bool
    error_type: str | None
    max_memory_mb: int
    output_pending: bool
    payload: msgspec.Raw


FromWorker = Ready | InitError | Result

_encoder = msgspec.json.Encoder()
decode_from_worker = msgspec.json.Decoder(FromWorker).decode


def encode_invoke(message: Invoke) -> bytes:
    buf = bytearray(HEADER.size)
    _encoder.encode_into(message, buf, HEADER.size)
    HEADER.pack_into(buf, 0, len(buf) - HEADER.size)
    return bytes(buf)


class FrameTooLarge(Exception):
    """A frame's header declares more than the reader's limit (the size is the arg)."""


class FrameReader:
    """Splits a byte stream into frames; fed by a pipe protocol's ``data_received``.

    A frame that arrives in many chunks is joined once, when its last byte is in, so a 6 MB result
    costs one copy rather than one per chunk. A header that declares more than ``limit`` raises
    ``FrameTooLarge`` as soon as its 4 bytes are in, so nothing is buffered on its word.
    """

    __slots__ = ("_chunks", "_have", "_need", "limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = HEADER.size
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        if self._chunks:
            self._chunks.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._chunks)
            self._chunks = []
        frames = []
        start = 0
        end = len(data)
        while end - start >= HEADER.size:
            (size,) = HEADER.unpack_from(data, start)
            if size > self.limit:
                raise FrameTooLarge(size)
            stop = start + HEADER.size + size
            if stop > end:
                self._need = HEADER.size + size
                break
            frames.append(data[start + HEADER.size:stop])
            start = stop
        else:
            self._need = HEADER.size
        if start < end:
            self._chunks = [data[start:]]
            self._have = end - start
        return frames
