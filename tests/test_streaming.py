"""Response streaming: a custom runtime (a Python bootstrap speaking the Runtime API by hand) and
Node.js's ``awslambda.streamifyResponse``, through function URLs in RESPONSE_STREAM mode and
InvokeWithResponseStream read by real boto3; the event stream encoding and the metadata prelude as
tables."""

from __future__ import annotations

import base64
import http.client
import json
import time
import zlib

import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer
from conftest import Daemon, function_toml
from test_deploy import create
from test_nodejs import MAJOR
from test_nodejs import RUNTIME as NODE_RUNTIME

from router.intake.stream import HIGH_WATER, LOW_WATER, ResponseStream
from sources import eventstream
from sources.http_stream import BadPrelude, Prelude, PreludeReader
from workers.runtimes.base import BASE_PYTHON

# --- pure parts ------------------------------------------------------------------------------


def decoded(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(m.headers, m.payload) for m in buffer]


@pytest.mark.parametrize(("encoded", "event_type", "content_type", "payload"), [
    (eventstream.payload_chunks(b"hello")[0], "PayloadChunk", "application/octet-stream", b"hello"),
    (eventstream.payload_chunks(b"\0\xff" * 5000)[0], "PayloadChunk", "application/octet-stream",
     b"\0\xff" * 5000),
    (eventstream.invoke_complete(), "InvokeComplete", "application/json", b"{}"),
    (eventstream.invoke_complete("Function.Oops", '{"errorMessage":"x"}', "TE9H"), "InvokeComplete",
     "application/json",
     b'{"ErrorCode":"Function.Oops","ErrorDetails":"{\\"errorMessage\\":\\"x\\"}","LogResult":"TE9H"}'),
])
def test_event_stream_messages_parse_as_botocore_reads_them(encoded: bytes, event_type: str,
                                                            content_type: str, payload: bytes) -> None:
    [(headers, body)] = decoded(encoded)
    assert headers == {":event-type": event_type, ":content-type": content_type,
                       ":message-type": "event"}
    assert body == payload


def test_event_stream_framing_is_exact() -> None:
    message = eventstream.message([(":a", "b")], b"xyz")
    total, headers_length = int.from_bytes(message[:4]), int.from_bytes(message[4:8])
    assert total == len(message) == 12 + 7 + 3 + 4 and headers_length == 7
    assert int.from_bytes(message[8:12]) == zlib.crc32(message[:8])
    assert int.from_bytes(message[-4:]) == zlib.crc32(message[:-4])
    assert message[12:22] == b"\x02:a\x07\x00\x01bxyz"
    corrupt = bytearray(message)
    corrupt[-5] ^= 1
    with pytest.raises(Exception, match=r"(?i)checksum|crc"):
        decoded(bytes(corrupt))


def test_a_large_chunk_is_split_within_a_messages_limit() -> None:
    data = b"a" * (eventstream.MAX_PAYLOAD + 10)
    messages = eventstream.payload_chunks(data)
    assert [len(decoded(m)[0][1]) for m in messages] == [eventstream.MAX_PAYLOAD, 10]
    assert eventstream.payload_chunks(b"") == []


DELIM = b"\0" * 8


@pytest.mark.parametrize(("chunks", "prelude", "body"), [
    ([b'{"statusCode":201}' + DELIM + b"body"], Prelude(201), [b"body"]),
    # Framing headers are the server's: dropped, as from a buffered response.
    ([b'{"headers":{"Content-Length":"9","x-a":"1"}}' + DELIM], Prelude(200, {"x-a": "1"}), [b""]),
    ([b'{"statusCode":2', b"02,", b'"headers":{"a":"b"},"cookies":["c=1"]}\0\0\0', b"\0\0\0\0\0rest"],
     Prelude(202, {"a": "b"}, ["c=1"]), [None, None, None, b"rest"]),
    ([b"{}" + DELIM, b"later"], Prelude(), [b""]),
    ([b"" + DELIM + b"\0\0x"], Prelude(), [b"\0\0x"]),  # the body's own NULs are body
])
def test_the_prelude_is_found_across_chunks(chunks: list[bytes], prelude: Prelude,
                                            body: list[bytes | None]) -> None:
    reader = PreludeReader()
    got = []
    for chunk in chunks:
        got.append(reader.feed(chunk))
        if got[-1] is not None:
            break
    assert got == body and reader.prelude == prelude


@pytest.mark.parametrize("data", [b"not json" + DELIM, b'{"statusCode": 99}' + DELIM,
                                  b'{"statusCode": "200"}' + DELIM, b"{" * 20000,
                                  b'{"statusCode": 101, "headers": {"upgrade": "x"}}' + DELIM,
                                  b'{"headers": {"x-a": "b\\r\\nSet-Cookie: forged"}}' + DELIM,
                                  b'{"headers": {"bad name": "v"}}' + DELIM,
                                  b'{"cookies": ["a=1\\r\\nx: y"]}' + DELIM])
def test_a_bad_prelude_is_refused(data: bytes) -> None:
    with pytest.raises(BadPrelude):
        PreludeReader().feed(data)


def test_a_stream_that_ends_inside_its_prelude_was_all_prelude() -> None:
    reader = PreludeReader()
    assert reader.feed(b'{"statusCode": 204}') is None
    assert reader.finish() == Prelude(204)


# --- the daemon ------------------------------------------------------------------------------

# A custom runtime that streams by hand: each chunk of the event's "chunks" after "delay" seconds,
# "size" bytes more in 64 KiB chunks, and an error in the trailers if "error"; "whole" answers in
# one ordinary response. Behind a function URL, the event is the request's JSON body.
STREAMER = r'''
import base64, http.client, json, os, socket, time

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
PREFIX = "/2018-06-01/runtime"
api = http.client.HTTPConnection(HOST, int(PORT))
while True:
    api.request("GET", PREFIX + "/invocation/next")
    r = api.getresponse()
    event = json.loads(r.read())
    rid = r.getheader("Lambda-Runtime-Aws-Request-Id")
    if "requestContext" in event:
        event = json.loads(event.get("body") or "{}")
    if "whole" in event:
        api.request("POST", f"{PREFIX}/invocation/{rid}/response", json.dumps({"whole": event["whole"]}))
        api.getresponse().read()
        continue
    sock = socket.create_connection((HOST, int(PORT)))
    sock.sendall((f"POST {PREFIX}/invocation/{rid}/response HTTP/1.1\r\nHost: api\r\n"
                  "Transfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n"
                  f"Content-Type: {event.get('type', 'text/plain')}\r\n"
                  "Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n"
                  "\r\n").encode())
    try:
        for i, piece in enumerate(event.get("chunks", [])):
            if i:
                time.sleep(event.get("delay", 0))
            data = piece.encode()
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
            print("STREAMED", json.dumps({"chunk": piece, "at": time.time()}), flush=True)
        if event.get("hangup"):  # leave without the stream's end, and live on for a while
            sock.close()
            time.sleep(event["hangup"])
            continue
        block = b"x" * 65536
        for _ in range(event.get("size", 0) // len(block)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
        trailers = b""
        if event.get("error"):
            body = base64.b64encode(json.dumps({"errorMessage": "it broke midway",
                                                "errorType": "Midway"}).encode())
            trailers = (b"Lambda-Runtime-Function-Error-Type: Function.Midway\r\n"
                        b"Lambda-Runtime-Function-Error-Body: " + body + b"\r\n")
        sock.sendall(b"0\r\n" + trailers + b"\r\n")
        answer = sock.recv(65536).split(b"\r\n")[0].decode()
    except OSError as e:
        answer = repr(e)  # the API cut the stream (and reset the connection)
    print("ANSWERED", json.dumps(answer), flush=True)
    sock.close()
'''
BOOTSTRAP = '#!/bin/sh\nexec "$STREAM_PYTHON" /var/task/streamer.py\n'

# After AWS's custom runtime tutorial, streaming: curl uploads what the handler writes to a pipe,
# chunk by chunk as it comes.
CURL_STREAMER = """\
#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  curl -sS -LD "$HEADERS" -o /dev/null "$API/invocation/next"
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  { printf 'tick '; sleep 1; printf 'tock'; } | curl -sS -o /dev/null -X POST -T - \\
    -H "Lambda-Runtime-Function-Response-Mode: streaming" -H "Transfer-Encoding: chunked" \\
    -H "Content-Type: text/plain" "$API/invocation/$REQUEST_ID/response"
done
"""

NODE_HANDLERS = """\
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
exports.web = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { "content-type": "text/plain", "x-custom": context.functionName },
    cookies: ["a=1; Path=/", "b=2"] });
  stream.write("hello ");
  await sleep(300);
  stream.write("world");
  stream.end();
});
exports.plain = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.setContentType("text/csv");
  for (const row of ["a,b\\n", "1,2\\n"]) { responseStream.write(row); await sleep(50); }
  responseStream.end();
});
exports.breaks = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream.write("partial");
  await sleep(50);
  throw new RangeError("node broke midway");
});
"""


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    custom = {"runtime": "provided.al2023", "env": {"STREAM_PYTHON": BASE_PYTHON}}
    url = {"auth": "none", "invoke_mode": "RESPONSE_STREAM"}
    functions = "".join([
        function_toml("streamer", "x", code="streamer", url=url, timeout_s=3, **custom),
        function_toml("buffered-url", "x", code="streamer", url={"auth": "none"}, **custom),
        function_toml("curl", "x", code="curl", url=url, runtime="provided.al2023"),
        function_toml("echo", "outcomes.echo"),
        *([function_toml("node-web", "index.web", code="node", url=url, runtime=NODE_RUNTIME),
           function_toml("node-plain", "index.plain", code="node", runtime=NODE_RUNTIME),
           function_toml("node-breaks", "index.breaks", code="node", runtime=NODE_RUNTIME)]
          if MAJOR else []),
    ])
    d = make_daemon(functions, {"streamer/streamer.py": STREAMER, "streamer/bootstrap": BOOTSTRAP,
                                "node/index.js": NODE_HANDLERS, "curl/bootstrap": CURL_STREAMER},
                    server="max_stream_bytes = 100000\n")
    for name in ("streamer", "curl"):
        (d.folder / name / "bootstrap").chmod(0o755)
    return d


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    return boto3.client(
        "lambda", endpoint_url=daemon.url, region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}, read_timeout=30))


def stream_events(client, name: str, event: object, **kwargs: object):  # type: ignore[no-untyped-def]
    r = client.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(event).encode(),
                                           **kwargs)
    assert r["StatusCode"] == 200 and r["ExecutedVersion"] == "$LATEST"
    return r, list(r["EventStream"])


def payload_of(events: list[dict[str, dict[str, object]]]) -> tuple[list[bytes], dict[str, object]]:
    assert "InvokeComplete" in events[-1], events
    assert all("PayloadChunk" in e for e in events[:-1]), events
    return [e["PayloadChunk"]["Payload"] for e in events[:-1]], events[-1]["InvokeComplete"]


def test_a_function_url_caller_gets_the_first_chunk_before_the_function_finishes(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    body = json.dumps({"chunks": ["one ", "two ", "three"], "delay": 0.6, "type": "text/x-words"})
    conn.request("POST", "/urls/streamer/go", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("Content-Type") == "text/x-words" and r.getheader("apigw-requestid")
    first = r.read1(65536)
    first_at = time.time()
    rest = r.read()
    conn.close()
    assert (first + rest) == b"one two three" and first.startswith(b"one")
    daemon.wait_for_line('STREAMED {"chunk": "three"')
    sent = {p["chunk"]: p["at"] for p in daemon.printed("STREAMED")[-3:]}
    assert set(sent) == {"one ", "two ", "three"}
    # The first chunk was in the caller's hands before the function had written the next.
    assert first_at < sent["two "] < sent["three"]
    request_id = r.getheader("apigw-requestid")
    assert daemon.record(request_id)["outcome"] == "success"


def test_invoke_with_response_stream_sends_chunks_then_invoke_complete(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "streamer", {"chunks": ["a", "bb", "ccc"], "delay": 0.05},
                              LogType="Tail")
    chunks, complete = payload_of(events)
    assert b"".join(chunks) == b"abbccc" and len(chunks) >= 2
    assert "ErrorCode" not in complete and "ErrorDetails" not in complete
    assert r["ResponseStreamContentType"] == "text/plain"
    assert "REPORT RequestId" in base64.b64decode(complete["LogResult"]).decode()
    request_id = r["ResponseMetadata"]["RequestId"]
    record = daemon.record(request_id)
    assert record["outcome"] == "success" and record["source"] == "invoke"


def test_an_error_in_the_trailers_ends_the_stream_with_it(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "streamer", {"chunks": ["before "], "error": True})
    chunks, complete = payload_of(events)
    assert b"".join(chunks) == b"before "
    assert complete["ErrorCode"] == "Function.Midway"
    assert json.loads(complete["ErrorDetails"]) == {"errorMessage": "it broke midway",
                                                    "errorType": "Midway"}
    record = daemon.record(r["ResponseMetadata"]["RequestId"])
    assert record["outcome"] == "error" and record["error_type"] == "Function.Midway"


def test_the_same_error_through_invoke_is_the_function_error(daemon: Daemon) -> None:
    r = daemon.invoke("streamer", {"chunks": ["before "], "error": True})
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled"
    assert r.json() == {"errorMessage": "it broke midway", "errorType": "Midway"}
    whole = daemon.invoke("streamer", {"chunks": ["col", "lected"]})
    assert whole.status == 200 and whole.body == b"collected"  # Invoke takes a stream whole


def test_a_timeout_mid_stream_ends_it_as_a_timeout(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "streamer", {"chunks": ["tick", "never"], "delay": 10})
    chunks, complete = payload_of(events)
    assert chunks == [b"tick"] and complete["ErrorCode"] == "Sandbox.Timedout"
    assert "Task timed out after 3.00 seconds" in complete["ErrorDetails"]
    assert daemon.record(r["ResponseMetadata"]["RequestId"])["outcome"] == "timeout"


def test_an_oversize_stream_is_cut_with_an_error(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "streamer", {"chunks": ["x"], "size": 400000})
    chunks, complete = payload_of(events)
    assert 0 < sum(map(len, chunks)) <= 100000
    assert complete["ErrorCode"] == "Function.ResponseSizeTooLarge"
    assert "100000 bytes" in complete["ErrorDetails"]
    assert daemon.record(r["ResponseMetadata"]["RequestId"])["error_type"] == \
        "Function.ResponseSizeTooLarge"
    # The runtime's connection was cut; the function serves on.
    assert b"".join(payload_of(stream_events(client, "streamer", {"chunks": ["ok"]})[1])[0]) == b"ok"


def test_a_buffered_function_through_the_streaming_api_is_one_chunk(client) -> None:  # type: ignore[no-untyped-def]
    _, events = stream_events(client, "echo", {"k": "v"})
    chunks, complete = payload_of(events)
    assert len(chunks) == 1 and json.loads(chunks[0])["event"] == {"k": "v"}
    assert complete == {} or "ErrorCode" not in complete
    _, events = stream_events(client, "streamer", {"whole": 5})  # a custom runtime's whole answer
    assert payload_of(events)[0] == [b'{"whole": 5}']


def test_a_streaming_url_answers_a_whole_response_as_a_buffered_url_does(daemon: Daemon) -> None:
    streamed = daemon.request("POST", "/urls/streamer/", json.dumps({"whole": 1}).encode())
    buffered = daemon.request("POST", "/urls/buffered-url/", json.dumps({"whole": 1}).encode())
    assert streamed.status == buffered.status == 200
    assert streamed.json() == buffered.json() == {"whole": 1}


def test_the_url_config_reports_its_invoke_mode(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get_function_url_config(FunctionName="streamer")["InvokeMode"] == "RESPONSE_STREAM"
    assert client.get_function_url_config(FunctionName="buffered-url")["InvokeMode"] == "BUFFERED"


node = pytest.mark.skipif(MAJOR is None, reason="no Node.js on this machine")


@node
def test_a_node_streamify_handler_with_a_prelude_sets_status_headers_and_cookies(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    conn.request("GET", "/urls/node-web/")
    r = conn.getresponse()
    assert r.status == 201 and r.getheader("Content-Type") == "text/plain"
    assert r.getheader("x-custom") == "node-web"
    assert r.headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    first = r.read1(65536)
    first_at = time.monotonic()
    rest = r.read()
    done_at = time.monotonic()
    conn.close()
    assert first + rest == b"hello world" and first == b"hello "
    assert done_at - first_at >= 0.2  # "world" came 300 ms after "hello "


@node
def test_node_streams_through_boto3_and_errors_in_trailers(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "node-plain", {})
    chunks, complete = payload_of(events)
    assert b"".join(chunks) == b"a,b\n1,2\n" and r["ResponseStreamContentType"] == "text/csv"
    assert "ErrorCode" not in complete
    r, events = stream_events(client, "node-breaks", {})
    chunks, complete = payload_of(events)
    assert b"".join(chunks) == b"partial" and complete["ErrorCode"] == "RangeError"
    assert json.loads(complete["ErrorDetails"])["errorMessage"] == "node broke midway"
    assert daemon.record(r["ResponseMetadata"]["RequestId"])["outcome"] == "error"
    whole = daemon.invoke("node-plain", {})
    assert whole.status == 200 and whole.body == b"a,b\n1,2\n"


def test_a_caller_that_goes_away_leaves_the_function_to_finish(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    body = json.dumps({"chunks": ["first", "second", "last"], "delay": 0.3})
    conn.request("POST", "/urls/streamer/", body=body)
    r = conn.getresponse()
    assert r.read1(65536) == b"first"
    request_id = r.getheader("apigw-requestid")
    conn.close()
    daemon.wait_for_line(f"END RequestId: {request_id}")
    # Billed whole, as Lambda bills a stream whose caller left; the worker is free again.
    assert daemon.record(request_id)["outcome"] == "success"
    assert daemon.request("POST", "/urls/streamer/", json.dumps({"chunks": ["again"]}).encode()).body \
        == b"again"
    assert not [line for line in daemon.lines if "Traceback" in line or "Error handling" in line]


async def test_a_stream_holds_the_worker_back_while_its_reader_is_behind() -> None:
    resumed: list[bool] = []
    stream = ResponseStream()
    stream.begin("text/plain", lambda: resumed.append(True))
    block = b"x" * (HIGH_WATER // 4)
    assert [stream.write(block) for _ in range(4)] == [True, True, True, False]
    taken = 0
    while HIGH_WATER - taken > LOW_WATER + len(block):
        taken += len(await stream.read() or b"")
        assert not resumed
    await stream.read()
    assert resumed  # below the low-water mark: the worker's connection is read again
    stream.end()
    assert await stream.read() == block and await stream.read() is None
    collector = ResponseStream(reader=False)
    collector.begin("text/plain", lambda: None)
    assert all(collector.write(block) for _ in range(8))  # nobody reads: it only collects
    assert collector.collected() == block * 8


def test_a_url_stream_that_fails_midway_is_cut_short(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    conn.request("POST", "/urls/streamer/", body=json.dumps({"chunks": ["so far"], "error": True}))
    r = conn.getresponse()
    assert r.status == 200  # sent before the failure
    with pytest.raises(http.client.IncompleteRead) as cut:
        r.read()
    conn.close()
    assert cut.value.partial == b"so far"
    assert daemon.record(r.getheader("apigw-requestid"))["error_type"] == "Function.Midway"
    assert not [line for line in daemon.lines if "Traceback" in line]


def test_a_bad_prelude_is_a_502(daemon: Daemon) -> None:
    event = {"chunks": ["{not json" + "\0" * 8, "body"],
             "type": "application/vnd.awslambda.http-integration-response"}
    r = daemon.request("POST", "/urls/streamer/", json.dumps(event).encode())
    assert r.status == 502 and r.json() == {"message": "Internal Server Error"}


def test_a_runtime_that_hangs_up_midway_ends_the_stream(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    r, events = stream_events(client, "streamer", {"chunks": ["half"], "hangup": 1.8})
    chunks, complete = payload_of(events)
    assert chunks == [b"half"] and complete["ErrorCode"] == "Runtime.TruncatedResponse"
    assert daemon.record(r["ResponseMetadata"]["RequestId"])["outcome"] == "error"


def test_the_url_config_api_sets_the_invoke_mode(client, daemon: Daemon) -> None:  # type: ignore[no-untyped-def]
    create(client, "api-url")
    made = client.create_function_url_config(FunctionName="api-url", AuthType="NONE",
                                             InvokeMode="RESPONSE_STREAM")
    assert made["InvokeMode"] == "RESPONSE_STREAM"
    assert client.get_function_url_config(FunctionName="api-url")["InvokeMode"] == "RESPONSE_STREAM"
    r = daemon.request("GET", "/urls/api-url/x")  # a Python function answers whole
    assert r.status == 200 and r.json() == {"version": 1}
    client.update_function_url_config(FunctionName="api-url", InvokeMode="BUFFERED")
    assert client.get_function_url_config(FunctionName="api-url")["InvokeMode"] == "BUFFERED"
    bad = daemon.request("PUT", "/2021-10-31/functions/api-url/url",
                         json.dumps({"InvokeMode": "SIDEWAYS"}).encode(),
                         {"Content-Type": "application/json"})
    assert bad.status == 400 and "InvokeMode" in bad.json()["message"], bad


def test_a_shell_bootstrap_streams_with_curl(daemon: Daemon) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    conn.request("GET", "/urls/curl/")
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "text/plain"
    first = r.read1(65536)
    first_at = time.monotonic()
    rest = r.read()
    conn.close()
    assert first + rest == b"tick tock" and first == b"tick "
    assert time.monotonic() - first_at >= 0.5  # "tock" came a second after "tick "


def test_an_abandoned_stream_keeps_nothing_of_what_still_comes() -> None:
    stream = ResponseStream()
    assert stream.write(b"x" * 10)
    stream.abandon()
    for _ in range(100):
        assert stream.write(b"y" * HIGH_WATER)  # never holds the worker back, never buffers
    assert stream.collected() == b"" and stream.size == 10 + 100 * HIGH_WATER
