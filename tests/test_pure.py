"""Table tests of the small pure helpers: names, request ids, billing, exit text, framing, JSON."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from itertools import combinations

import msgspec
import pytest

from router.config import MeteringConfig
from router.intake.invocation import Status, new_request_id
from router.metering.record import _Clock, billed_ms, cost_usd
from router.run.funclog import whole_lines
from router.run.pool import exit_text
from router.run.registry import parse_function_name
from sources.invoke_api import MAX_CLIENT_CONTEXT, client_context, is_json
from workers.protocol import (
    HEADER,
    MAX_FRAME,
    FrameReader,
    FrameTooLarge,
    InitError,
    Invoke,
    Ready,
    Result,
    decode_from_worker,
    encode_invoke,
)

# --- router.run.registry.parse_function_name -------------------------------------------------------


@pytest.mark.parametrize(("text", "want"), [
    ("fn", ("fn", None)),
    ("my-function_2", ("my-function_2", None)),
    ("a" * 64, ("a" * 64, None)),
    ("fn:prod", ("fn", "prod")),
    ("fn:7", ("fn", "7")),
    ("fn:$LATEST", ("fn", "$LATEST")),
    ("fn:" + "q" * 128, ("fn", "q" * 128)),
    ("arn:aws:lambda:us-east-1:123456789012:function:fn", ("fn", None)),
    ("arn:aws:lambda:us-east-1:123456789012:function:fn:live", ("fn", "live")),
    ("arn:aws:lambda:us-east-1:123456789012:function:fn:$LATEST", ("fn", "$LATEST")),
    ("arn:aws-cn:lambda:cn-north-1:123456789012:function:fn", ("fn", None)),
    ("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:fn", ("fn", None)),
    ("123456789012:function:fn", ("fn", None)),
    ("123456789012:function:fn:3", ("fn", "3")),
])
def test_parse_function_name(text: str, want: tuple[str, str | None]) -> None:
    assert parse_function_name(text) == want


@pytest.mark.parametrize("text", [
    "",
    "a" * 65,
    "my fn",
    " fn",
    "fn\n",
    "fn/x",
    "fn.py",
    "fn:",
    "fn:a:b",
    "fn:" + "q" * 129,
    "fn:$latest",
    ":prod",
    "arn:aws:lambda:us-east-1:12345:function:fn",  # account id is not 12 digits
    "arn:aws:lambda:us-east-1:123456789012:function:",
    "arn:aws:s3:us-east-1:123456789012:function:fn",
    "12345678901:function:fn",
    "123456789012:function:fn:" + "a" * 129,
])
def test_parse_function_name_rejects(text: str) -> None:
    assert parse_function_name(text) is None


# --- router.intake.invocation.new_request_id -------------------------------------------------------------


def test_request_id_is_a_version_4_uuid() -> None:
    ids = [new_request_id() for _ in range(10_000)]

    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text  # canonical lowercase 8-4-4-4-12 form
        assert u.version == 4
        assert u.variant == uuid.RFC_4122
    assert len(set(ids)) == len(ids)


def test_request_id_random_bits_vary() -> None:
    ids = [new_request_id() for _ in range(10_000)]

    seen = [{text[i] for text in ids} for i in range(36)]

    hex_digits = set("0123456789abcdef")
    for i, chars in enumerate(seen):
        if i in (8, 13, 18, 23):
            assert chars == {"-"}
        elif i == 14:
            assert chars == {"4"}
        elif i == 19:
            assert chars == set("89ab")
        else:
            assert chars == hex_digits, i


# --- router.metering.record ---------------------------------------------------------------------------


@pytest.mark.parametrize(("duration_ms", "billed"), [
    (0.0, 0),
    (0.01, 1),
    (0.5, 1),
    (1.0, 1),
    (1.0000001, 1),  # rounded as the record shows it (3 decimals): float noise bills nothing
    (1.0004, 1),  # recorded as 1.0: billed as recorded
    (1.0006, 2),  # recorded as 1.001
    (2.9999999, 3),
    (26.73, 27),
    (100.0, 100),
    (899_999.5, 900_000),
])
def test_billed_ms(duration_ms: float, billed: int) -> None:
    assert billed_ms(duration_ms) == billed


DEFAULT_PRICES = MeteringConfig()
ROUND_PRICES = MeteringConfig(price_per_gb_second=1.0, price_per_request=0.5)


@pytest.mark.parametrize(("memory_mb", "billed", "status", "config", "cost"), [
    (1024, 1000, "success", DEFAULT_PRICES, 0.0000166667 + 0.0000002),
    (128, 1, "success", DEFAULT_PRICES, 128 / 1024 / 1000 * 0.0000166667 + 0.0000002),
    (1024, 0, "success", DEFAULT_PRICES, 0.0000002),
    (512, 2000, "error", ROUND_PRICES, 1.5),
    (2048, 500, "timeout", ROUND_PRICES, 1.5),
    (256, 4000, "crash", ROUND_PRICES, 1.5),
    (10240, 100, "oom", ROUND_PRICES, 1.5),
    (1024, 1000, "throttled", ROUND_PRICES, 0.0),
    (1024, 1000, "throttled", DEFAULT_PRICES, 0.0),
    (1024, 1000, "success", MeteringConfig(price_per_gb_second=0.0, price_per_request=0.0), 0.0),
])
def test_cost_usd(memory_mb: int, billed: int, status: Status, config: MeteringConfig,
                  cost: float) -> None:
    assert cost_usd(memory_mb, billed, status, config) == pytest.approx(cost, rel=1e-12, abs=0)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.mark.parametrize("t", [
    0.0,
    0.5,
    1.25,
    1_700_000_000.0,
    1_700_000_000.5,
    1_700_000_000.75,
    1_700_000_000.015625,
    1_700_000_000.0625,
    4_102_444_799.5,  # 2099-12-31T23:59:59.5
    1.000001,
    1_700_000_000.1,
    1_700_000_000.3,
    1_527_549_237.953228,
    1.9999996,  # rounds up into the next second
])
def test_clock_iso(t: float) -> None:
    assert _Clock().iso(t) == _iso(t)


def test_clock_iso_reuses_second_correctly() -> None:
    clock = _Clock()
    times = [1_700_000_000.25, 1_700_000_000.5, 1_700_000_000.75, 1_700_000_001.0,
             1_700_000_001.5, 1_700_000_000.125, 1_700_000_000.125, 0.5, 1_700_000_001.0625]

    got = [clock.iso(t) for t in times]

    assert got == [_iso(t) for t in times]
    assert got[:4] == ["2023-11-14T22:13:20.250000Z", "2023-11-14T22:13:20.500000Z",
                       "2023-11-14T22:13:20.750000Z", "2023-11-14T22:13:21.000000Z"]


# --- router.run.pool.exit_text ---------------------------------------------------------------------


@pytest.mark.parametrize(("returncode", "text"), [
    (0, "exit status 0"),
    (1, "exit status 1"),
    (3, "exit status 3"),
    (255, "exit status 255"),
    (-9, "signal: killed"),
    (-15, "signal: terminated"),
    (-11, "signal: segmentation fault"),
    (-6, "signal: aborted"),
    (-7, "signal: bus error"),
    (-2, "signal: interrupt"),
    (-200, "signal: 200"),
])
def test_exit_text(returncode: int, text: str) -> None:
    assert exit_text(returncode) == text


# --- workers.protocol --------------------------------------------------------------------------


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


def feed_all(chunks: list[bytes]) -> list[bytes]:
    reader = FrameReader()
    frames = []
    for chunk in chunks:
        frames += reader.feed(chunk)
    return frames


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


BODIES = [b'{"type":"ready"}', b"", b"x", b"abcd", b'{"a":[1,2,3]}']
STREAM = b"".join(frame(b) for b in BODIES)


@pytest.mark.parametrize("chunks", [
    [STREAM],
    chunked(STREAM, 1),
    chunked(STREAM, 2),
    chunked(STREAM, 3),
    chunked(STREAM, 4),
    chunked(STREAM, 5),
    chunked(STREAM, 7),
    chunked(STREAM, 16),
    [STREAM[:2], STREAM[2:3], STREAM[3:]],  # the header itself split
    [STREAM[:4], STREAM[4:]],  # exactly the header, then the rest
    [STREAM[:-1], STREAM[-1:]],
    [b"", STREAM, b""],
    [STREAM[:10], b"", STREAM[10:]],
], ids=lambda chunks: f"{len(chunks)}-chunks")
def test_frame_reader_chunking(chunks: list[bytes]) -> None:
    assert feed_all(chunks) == BODIES


def test_frame_reader_every_two_cut_split() -> None:
    for a, b in combinations(range(len(STREAM) + 1), 2):
        chunks = [STREAM[:a], STREAM[a:b], STREAM[b:]]
        assert feed_all(chunks) == BODIES, (a, b)


@pytest.mark.parametrize(("chunks", "want"), [
    ([], []),
    ([b""], []),
    ([frame(b"")], [b""]),
    ([frame(b"") * 3], [b"", b"", b""]),
    ([frame(b"one") + frame(b"two") + frame(b"three")], [b"one", b"two", b"three"]),
    ([frame(b"one") + frame(b"tw")[:5]], [b"one"]),  # an incomplete frame is held back
    ([b"\x00\x00"], []),
    ([b"\x00\x00\x00\x03ab"], []),
])
def test_frame_reader_frames(chunks: list[bytes], want: list[bytes]) -> None:
    assert feed_all(chunks) == want


def test_frame_reader_yields_each_frame_when_complete() -> None:
    reader = FrameReader()

    got = [reader.feed(chunk) for chunk in
           [b"\x00\x00", b"\x00\x02a", b"b\x00", b"\x00\x00\x01c\x00\x00\x00\x00", b"\x00"]]

    assert got == [[], [], [b"ab"], [b"c", b""], []]


@pytest.mark.parametrize("chunks", [
    [HEADER.pack(11)],
    [HEADER.pack(11)[:3], HEADER.pack(11)[3:]],  # refused as soon as the header is whole
    [frame(b"ok") + HEADER.pack(2**32 - 1)],  # after a good frame in the same read
    [frame(b"ok"), HEADER.pack(11) + b"x" * 11],
])
def test_frame_reader_refuses_a_frame_over_its_limit(chunks: list[bytes]) -> None:
    reader = FrameReader(limit=10)
    with pytest.raises(FrameTooLarge):
        for chunk in chunks:
            reader.feed(chunk)


def test_frame_reader_takes_a_frame_at_its_limit() -> None:
    assert FrameReader(limit=10).feed(frame(b"x" * 10)) == [b"x" * 10]
    assert FrameReader().limit == MAX_FRAME > 6_291_556


@pytest.mark.parametrize("chunk_size", [64 * 1024, 65_535, 1_000_003])
def test_frame_reader_large_frame(chunk_size: int) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    stream = frame(big) + frame(b"after")

    frames = feed_all(chunked(stream, chunk_size))

    assert len(frames) == 2
    assert frames[0] == big
    assert frames[1] == b"after"


@pytest.mark.parametrize("message", [
    Invoke(request_id="8f5e1b1a-2c3d-4e5f-8a9b-0c1d2e3f4a5b", deadline_ms=1_700_000_003_000,
           arn="arn:aws:lambda:us-east-1:000000000000:function:hello",
           payload=msgspec.Raw(b'{"key": "value", "n": [1, 2.5, null]}')),
    Invoke(request_id="r", deadline_ms=0, arn="a", payload=msgspec.Raw(b'"\xc3\xa9"'),
           client_context=msgspec.Raw(b'{"custom":{"a":"b"}}'),
           trace_id="Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
    Invoke(request_id="r", deadline_ms=1, arn="a", payload=msgspec.Raw(b"null")),
])
def test_encode_invoke_round_trip(message: Invoke) -> None:
    data = encode_invoke(message)

    (body,) = feed_all(chunked(data, 3))

    assert HEADER.unpack_from(data)[0] == len(data) - HEADER.size
    # What the worker's ``json.loads`` sees: payload and client context inline, not as strings.
    # (The router only encodes Invoke; msgspec cannot decode ``Raw | None`` back, so no decode.)
    context = message.client_context
    assert json.loads(body) == {
        "type": "invoke", "request_id": message.request_id, "deadline_ms": message.deadline_ms,
        "arn": message.arn, "payload": json.loads(bytes(message.payload)),
        "client_context": None if context is None else json.loads(bytes(context)),
        "trace_id": message.trace_id,
    }
    assert bytes(message.payload) in body


@pytest.mark.parametrize("message", [
    Ready(),
    InitError(error_type="Runtime.ImportModuleError",
              payload=msgspec.Raw(b'{"errorMessage": "No module named \'app\'"}')),
    Result(ok=True, error_type=None, max_memory_mb=42, output_pending=False,
           payload=msgspec.Raw(b'{"statusCode": 200, "body": "hi"}')),
    Result(ok=False, error_type="ValueError", max_memory_mb=0,
           output_pending=True, payload=msgspec.Raw(b'{"errorMessage": "bad"}')),
    Result(ok=True, error_type=None, max_memory_mb=128,
           output_pending=False, payload=msgspec.Raw(b"null")),
])
def test_from_worker_round_trip(message: Ready | InitError | Result) -> None:
    stream = frame(msgspec.json.encode(message)) * 2

    frames = feed_all(chunked(stream, 5))

    assert [decode_from_worker(f) for f in frames] == [message, message]


@pytest.mark.parametrize(("body", "message"), [
    # Shaped as workers/bootstrap.py writes them (stdlib json, spaces, hand-built headers).
    (b'{"type": "ready"}', Ready()),
    (b'{"type": "init_error", "error_type": "Runtime.HandlerNotFound", "payload": '
     b'{"errorMessage": "x", "stackTrace": []}}',
     InitError(error_type="Runtime.HandlerNotFound",
               payload=msgspec.Raw(b'{"errorMessage": "x", "stackTrace": []}'))),
    (b'{"type":"result","ok":true,"error_type":null,"max_memory_mb":30,'
     b'"output_pending":false,"payload":[1, 2]}',
     Result(ok=True, error_type=None, max_memory_mb=30,
            output_pending=False, payload=msgspec.Raw(b"[1, 2]"))),
    (b'{"type":"result","ok":false,"error_type":"Exception",'
     b'"max_memory_mb":30,"output_pending":true,"payload":{"errorType": "Exception"}}',
     Result(ok=False, error_type="Exception", max_memory_mb=30,
            output_pending=True, payload=msgspec.Raw(b'{"errorType": "Exception"}'))),
])
def test_decode_worker_frames(body: bytes, message: Ready | InitError | Result) -> None:
    decoded = decode_from_worker(body)

    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize("body", [
    b"",
    b"{}",
    b'{"type": "invoke"}',
    b'{"type": "result", "ok": true}',
    b'{"type": "init_error", "error_type": 1, "payload": {}}',
    b'{"type": "ready"} trailing',
    b'{"type": "surprise"}',
    b"\xff\xfe garbage",
])
def test_decode_worker_frames_rejects(body: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_from_worker(body)


# --- router.run.funclog.whole_lines -----------------------------------------------------------------


@pytest.mark.parametrize(("partial", "chunks", "lines", "left"), [
    (b"", [b"a\nb\n"], [b"a\nb\n"], b""),
    (b"", [b"a\nb"], [b"a\n"], b"b"),
    (b"ab", [b"c\nd"], [b"abc\n"], b"d"),
    (b"", [b"x"] * 5, [b""] * 5, b"xxxxx"),
    (b"", [b"x"] * 7, [b""] * 6 + [b"xxxxxx\n"], b"x"),  # cut past the limit, 6
    (b"", [b"x" * 6, b"\n"], [b"", b"xxxxxx\n"], b""),  # 6 and a newline fit
    (b"", [b"x" * 13], [b"xxxxxx\nxxxxxx\n"], b"x"),
    (b"xxxxx", [b"xx\n"], [b"xxxxxx\nx\n"], b""),  # a line of 7 is cut
    (b"xxxx", [b"xxxxxxxx\nab\ncd"], [b"xxxxxx\nxxxxxx\nab\n"], b"cd"),
    (b"", [b"\n\n"], [b"\n\n"], b""),
    (b"", [b""], [b""], b""),
])
def test_whole_lines(partial: bytes, chunks: list[bytes], lines: list[bytes], left: bytes) -> None:
    buffer = bytearray(partial)

    got = [whole_lines(buffer, chunk, limit=6) for chunk in chunks]

    assert got == lines
    assert buffer == left


def test_whole_lines_keeps_every_byte() -> None:
    text = b"".join(b"y" * n + b"\n" for n in range(40)) + b"z" * 33
    for size in (1, 2, 5, 7, 64):
        buffer = bytearray()
        out = b"".join(whole_lines(buffer, text[i:i + size], limit=8)
                       for i in range(0, len(text), size))
        assert out.replace(b"\n", b"") + buffer == text.replace(b"\n", b""), size
        assert all(len(line) <= 8 for line in out.split(b"\n")), size
        assert len(buffer) <= 8


# --- sources.invoke_api --------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "want"), [
    (b"{}", True),
    (b"[]", True),
    (b"0", True),
    (b"-1.5e3", True),
    (b"true", True),
    (b"null", True),
    (b'"text"', True),
    (b'"\xc3\xa9"', True),  # UTF-8 inside a string
    (b'"\\u00e9"', True),
    (b'  {"a": [1, {"b": null, "c": "d"}], "e": {"f": {"g": []}}}\n', True),
    (b"[" * 100 + b"]" * 100, True),
    (b"", False),
    (b"   ", False),
    (b"{} x", False),
    (b"{}{}", False),
    (b"1 2", False),
    (b'{"a": 1,}', False),
    (b"{'a': 1}", False),
    (b"nan", False),
    (b"undefined", False),
    (b'"\xff"', False),  # invalid UTF-8 inside a string
    (b'{"\xc3": 1}', False),  # truncated UTF-8 in a key
    (b"[" * 100 + b"]" * 99, False),
    (b'"unterminated', False),
])
def test_is_json(body: bytes, want: bool) -> None:
    assert is_json(body) is want


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def padded_object(length: int) -> bytes:
    """A JSON object whose base64 text is exactly ``length`` characters (a multiple of 4)."""
    size = length // 4 * 3
    return b'{"a":"' + b"x" * (size - 8) + b'"}'


@pytest.mark.parametrize(("header", "want"), [
    (b64(b'{"custom": {"k": "v"}}'), b'{"custom": {"k": "v"}}'),
    (b64(b"{}"), b"{}"),
    (b64(b' {"env": {"a": [1]}} '), b' {"env": {"a": [1]}} '),
    (b64(padded_object(MAX_CLIENT_CONTEXT - 3)), padded_object(MAX_CLIENT_CONTEXT - 3)),
    (b64(b"[1, 2]"), None),  # an array, not an object
    (b64(b'"s"'), None),
    (b64(b"null"), None),
    (b64(b"{"), None),
    (b64(b"{} {}"), None),
    (b64(b'{"a": "\xff"}'), None),
    ("not base64!", None),
    ("e30", None),  # missing padding
    (b64(b"{}") + "\n", None),
    ("", None),
    (b64(padded_object(MAX_CLIENT_CONTEXT + 1)), None),  # too long
])
def test_client_context(header: str, want: bytes | None) -> None:
    assert client_context(header) == want


def test_padded_object_lengths() -> None:
    assert MAX_CLIENT_CONTEXT == 3583
    assert len(b64(padded_object(MAX_CLIENT_CONTEXT - 3))) == 3580
    assert len(b64(padded_object(MAX_CLIENT_CONTEXT + 1))) == 3584
