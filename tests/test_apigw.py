"""Table tests of sources.apigw: the payload 2.0 event built from a request, and the response built
from a function's result."""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any

import msgspec
import pytest

from sources import apigw
from sources.apigw import (
    JSON_HEADERS,
    HttpRequest,
    HttpResponse,
    build_event,
    clf_time,
    error_response,
    is_text,
    joined,
    to_response,
)

NOW = 1795746099.123  # 2026-11-27 02:21:39.123 UTC
NOW_TEXT = "27/Nov/2026:02:21:39 +0000"
NOW_MS = 1795746099123
CT_JSON = ("Content-Type", "application/json")
ISE = b'{"message": "Internal Server Error"}'


def request(*, method: str = "GET", raw_path: str = "/", raw_query: str = "",
            headers: tuple[tuple[str, str], ...] = (), body: bytes = b"",
            source_ip: str = "10.0.0.1", protocol: str = "HTTP/1.1") -> HttpRequest:
    return HttpRequest(method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body,
                       source_ip=source_ip, protocol=protocol)


def event(req: HttpRequest, *, route_key: str = "$default",
          path_params: dict[str, str] | None = None, now: float = NOW) -> dict[str, object]:
    return msgspec.to_builtins(
        build_event(req, route_key=route_key, path_params=path_params or {}, request_id="req-1",
                    account_id="123456789012", api_id="headwater", now=now))


# --- build_event: whole events -----------------------------------------------------------------


def test_build_event_plain_get() -> None:
    req = request(raw_path="/items/7", headers=(("Host", "abc.example.com"), ("User-Agent", "curl/8.0")))
    got = event(req, route_key="GET /items")
    assert got == {
        "version": "2.0",
        "routeKey": "GET /items",
        "rawPath": "/items/7",
        "rawQueryString": "",
        "headers": {"host": "abc.example.com", "user-agent": "curl/8.0"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "headwater",
            "domainName": "abc.example.com",
            "domainPrefix": "abc",
            "http": {
                "method": "GET",
                "path": "/items/7",
                "protocol": "HTTP/1.1",
                "sourceIp": "10.0.0.1",
                "userAgent": "curl/8.0",
            },
            "requestId": "req-1",
            "routeKey": "GET /items",
            "stage": "$default",
            "time": NOW_TEXT,
            "timeEpoch": NOW_MS,
        },
        "isBase64Encoded": False,
    }
    for absent in ("body", "queryStringParameters", "cookies", "pathParameters", "stageVariables"):
        assert absent not in got
    json.dumps(got)  # the event is JSON as it stands


def test_build_event_full_post() -> None:
    req = request(
        method="POST", raw_path="/users/u1/posts", raw_query="a=1&a=2", protocol="HTTP/2.0",
        source_ip="203.0.113.9",
        headers=(("Host", "api.example.com"), ("Content-Type", "application/json"),
                 ("Cookie", "s=abc; theme=dark"), ("X-Trace", "t1"), ("x-trace", "t2")),
        body=b'{"k": 1}')
    got = event(req, route_key="POST /users/{uid}/posts", path_params={"uid": "u1"})
    assert got == {
        "version": "2.0",
        "routeKey": "POST /users/{uid}/posts",
        "rawPath": "/users/u1/posts",
        "rawQueryString": "a=1&a=2",
        "cookies": ["s=abc", "theme=dark"],
        "headers": {"host": "api.example.com", "content-type": "application/json", "x-trace": "t1,t2"},
        "queryStringParameters": {"a": "1,2"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "headwater",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {
                "method": "POST",
                "path": "/users/u1/posts",
                "protocol": "HTTP/2.0",
                "sourceIp": "203.0.113.9",
                "userAgent": "",
            },
            "requestId": "req-1",
            "routeKey": "POST /users/{uid}/posts",
            "stage": "$default",
            "time": NOW_TEXT,
            "timeEpoch": NOW_MS,
        },
        "pathParameters": {"uid": "u1"},
        "body": '{"k": 1}',
        "isBase64Encoded": False,
    }


# --- build_event: headers and cookies ----------------------------------------------------------


@pytest.mark.parametrize(("headers", "want_headers", "want_cookies"), [
    ((), {}, None),
    ((("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("X-B", "3"), ("X-A", "4")),
     {"host": "h", "x-a": "1,2,4", "x-b": "3"}, None),
    ((("ACCEPT", "text/html"), ("Accept", "application/json")),
     {"accept": "text/html,application/json"}, None),
    ((("X-Empty", ""),), {"x-empty": ""}, None),
    ((("Cookie", "a=1; b=2"), ("X", "y"), ("cookie", "c=3")), {"x": "y"}, ["a=1", "b=2", "c=3"]),
    ((("COOKIE", "a=1;b=2;"),), {}, ["a=1", "b=2"]),
    ((("Cookie", "  a=1  ;  ; b=x=y "),), {}, ["a=1", "b=x=y"]),
    ((("Cookie", ""),), {}, None),
    ((("Cookie", " ; "),), {}, None),
    ((("Set-Cookie", "not=moved"),), {"set-cookie": "not=moved"}, None),
])
def test_build_event_headers_and_cookies(headers: tuple[tuple[str, str], ...], want_headers: dict[str, str],
                                         want_cookies: list[str] | None) -> None:
    got = event(request(headers=headers))
    assert got["headers"] == want_headers
    if want_cookies is None:
        assert "cookies" not in got
    else:
        assert got["cookies"] == want_cookies


@pytest.mark.parametrize(("headers", "domain", "prefix", "agent"), [
    ((("Host", "abc123.lambda-url.us-east-1.on.aws"),), "abc123.lambda-url.us-east-1.on.aws", "abc123", ""),
    ((("HOST", "localhost"), ("user-agent", "ua/1")), "localhost", "localhost", "ua/1"),
    ((("User-Agent", "a"), ("User-Agent", "b")), "", "", "a,b"),
])
def test_build_event_request_context_from_headers(headers: tuple[tuple[str, str], ...], domain: str,
                                                  prefix: str, agent: str) -> None:
    ctx = event(request(headers=headers))["requestContext"]
    assert isinstance(ctx, dict)
    assert (ctx["domainName"], ctx["domainPrefix"], ctx["http"]["userAgent"]) == (domain, prefix, agent)


# --- build_event: query string -----------------------------------------------------------------


@pytest.mark.parametrize(("raw_query", "want"), [
    ("a=1&a=2&b=x%20y&c=", {"a": "1,2", "b": "x y", "c": ""}),
    ("q=a+b", {"q": "a b"}),
    ("flag", {"flag": ""}),
    ("k%3D=v%26w", {"k=": "v&w"}),
    ("a=1&&b=2", {"a": "1", "b": "2"}),
    ("", None),
    ("&", None),
])
def test_build_event_query(raw_query: str, want: dict[str, str] | None) -> None:
    got = event(request(raw_query=raw_query))
    assert got["rawQueryString"] == raw_query
    if want is None:
        assert "queryStringParameters" not in got
    else:
        assert got["queryStringParameters"] == want


# --- build_event: body -------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body", "want_body", "want_b64"), [
    ("text/plain", b"hello", "hello", False),
    ("TEXT/PLAIN", b"hello", "hello", False),
    ("text/html; charset=utf-8", "héllo ✓".encode(), "héllo ✓", False),
    ("text/csv", b"a,b\n1,2\n", "a,b\n1,2\n", False),
    ("application/json", b'{"k": [1, 2]}', '{"k": [1, 2]}', False),
    ("application/json; charset=utf-8", b"[]", "[]", False),
    ("application/vnd.api+json", b'{"data": null}', '{"data": null}', False),
    ("application/problem+json", b"{}", "{}", False),
    ("application/x-www-form-urlencoded", b"a=1&b=x+y", "a=1&b=x+y", False),
    ("application/xml", b"<a/>", "<a/>", False),
    (None, "naïve".encode(), "naïve", False),
    (None, b"plain", "plain", False),
    ("image/png", b"\x89PNG\r\n\x1a\n", base64.b64encode(b"\x89PNG\r\n\x1a\n").decode(), True),
    ("image/png", b"abc", "YWJj", True),
    ("application/octet-stream", b"abc", "YWJj", True),
    ("multipart/form-data; boundary=x", b"--x--", "LS14LS0=", True),
    ("text/plain", b"\xff\xfe", "//4=", True),
    ("application/json", b'"\xc3"', "IsMi", True),
    (None, b"\xff", "/w==", True),
])
def test_build_event_body(content_type: str | None, body: bytes, want_body: str, want_b64: bool) -> None:
    headers = () if content_type is None else (("Content-Type", content_type),)
    got = event(request(method="POST", headers=headers, body=body))
    assert got["body"] == want_body
    assert got["isBase64Encoded"] is want_b64
    if want_b64:
        assert base64.b64decode(want_body) == body


@pytest.mark.parametrize("content_type", [None, "text/plain", "image/png"])
def test_build_event_empty_body(content_type: str | None) -> None:
    headers = () if content_type is None else (("Content-Type", content_type),)
    got = event(request(method="POST", headers=headers, body=b""))
    assert "body" not in got
    assert got["isBase64Encoded"] is False


# --- build_event: time -------------------------------------------------------------------------


@pytest.mark.parametrize(("now", "time_text", "epoch_ms"), [
    (NOW, NOW_TEXT, NOW_MS),
    (1795746099.0, NOW_TEXT, 1795746099000),
    (1795746099.9999, NOW_TEXT, 1795746099999),
    (0.0, "01/Jan/1970:00:00:00 +0000", 0),
    (1583348638.390, "04/Mar/2020:19:03:58 +0000", 1583348638390),
])
def test_build_event_time(now: float, time_text: str, epoch_ms: int) -> None:
    ctx = event(request(), now=now)["requestContext"]
    assert isinstance(ctx, dict)
    assert (ctx["time"], ctx["timeEpoch"]) == (time_text, epoch_ms)
    assert isinstance(ctx["timeEpoch"], int)


# --- clf_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("epoch", "want"), [
    (1795746099, "27/Nov/2026:02:21:39 +0000"),
    (1795746099.999, "27/Nov/2026:02:21:39 +0000"),
    (0, "01/Jan/1970:00:00:00 +0000"),
    (1704423845, "05/Jan/2024:03:04:05 +0000"),
    (1709208000, "29/Feb/2024:12:00:00 +0000"),
    (1735689599, "31/Dec/2024:23:59:59 +0000"),
    (1718236800, "13/Jun/2024:00:00:00 +0000"),
])
def test_clf_time(epoch: float, want: str) -> None:
    assert clf_time(epoch) == want


# --- is_text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "want"), [
    ("", True),
    ("text/plain", True),
    ("text/html; charset=utf-8", True),
    ("Text/CSV", True),
    ("application/json", True),
    ("APPLICATION/JSON; charset=UTF-8", True),
    ("application/javascript", True),
    ("application/xml", True),
    ("application/x-www-form-urlencoded", True),
    ("application/xhtml+xml", True),
    ("application/ld+json", True),
    ("application/graphql", True),
    ("application/yaml", True),
    ("application/vnd.api+json", True),
    ("image/svg+xml", True),
    ("image/png", False),
    ("image/jpeg", False),
    ("application/octet-stream", False),
    ("application/pdf", False),
    ("application/zip", False),
    ("multipart/form-data; boundary=abc", False),
    ("audio/mpeg", False),
    ("video/mp4", False),
])
def test_is_text(content_type: str, want: bool) -> None:
    assert is_text(content_type) is want


# --- joined ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pairs", "want"), [
    ([], {}),
    ([("a", "1")], {"a": "1"}),
    ([("a", "1"), ("a", "2")], {"a": "1,2"}),
    ([("a", "1"), ("b", "2"), ("a", "3"), ("a", "4")], {"a": "1,3,4", "b": "2"}),
    ([("A", "1"), ("a", "2")], {"A": "1", "a": "2"}),
    ([("a", ""), ("a", "")], {"a": ","}),
    ([("a", "x,y"), ("a", "z")], {"a": "x,y,z"}),
])
def test_joined(pairs: list[tuple[str, str]], want: dict[str, str]) -> None:
    got = joined(iter(pairs))
    assert got == want
    assert list(got) == list(want)  # first-seen order


# --- to_response -------------------------------------------------------------------------------


def j(value: object) -> bytes:
    return json.dumps(value).encode()


RESPONSES = [
    # any JSON that is not an object with statusCode: 200 application/json, the same bytes
    (b'"hello"', 200, [CT_JSON], b'"hello"'),
    (b"42", 200, [CT_JSON], b"42"),
    (b"-3.5e2", 200, [CT_JSON], b"-3.5e2"),
    (b'[1, "a", {"statusCode": 500}]', 200, [CT_JSON], b'[1, "a", {"statusCode": 500}]'),
    (b"null", 200, [CT_JSON], b"null"),
    (b"true", 200, [CT_JSON], b"true"),
    (b'{"message": "hi", "body": "x"}', 200, [CT_JSON], b'{"message": "hi", "body": "x"}'),
    (b'  {"a":1}\n', 200, [CT_JSON], b'  {"a":1}\n'),
    (b"{}", 200, [CT_JSON], b"{}"),
    # statusCode as int and as a numeric string
    (j({"statusCode": 201}), 201, [CT_JSON], b""),
    (j({"statusCode": "404", "body": "nope"}), 404, [CT_JSON], b"nope"),
    (j({"statusCode": 599}), 599, [CT_JSON], b""),
    (b' \n{"statusCode": 204}', 204, [CT_JSON], b""),
    # headers: strings as they are, anything else as JSON text
    (j({"statusCode": 200, "headers": {"X-S": "s", "X-N": 5, "X-B": True, "X-L": [1, "a"], "X-O": {"k": None},
                                       "X-F": 1.5}, "body": "x"}),
     200, [("X-S", "s"), ("X-N", "5"), ("X-B", "true"), ("X-L", '[1, "a"]'), ("X-O", '{"k": null}'),
           ("X-F", "1.5"), CT_JSON], b"x"),
    (j({"statusCode": 200, "headers": None}), 200, [CT_JSON], b""),
    (j({"statusCode": 200, "headers": {}}), 200, [CT_JSON], b""),
    # cookies: one Set-Cookie each, in order, after the headers
    (j({"statusCode": 200, "cookies": ["a=1; Path=/", "b=2", "a=3"],
        "headers": {"Content-Type": "text/plain"}, "body": "hi"}),
     200, [("Content-Type", "text/plain"), ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2"),
           ("Set-Cookie", "a=3")], b"hi"),
    (j({"statusCode": 200, "cookies": []}), 200, [CT_JSON], b""),
    (j({"statusCode": 200, "cookies": None}), 200, [CT_JSON], b""),
    # body
    (j({"statusCode": 200, "body": "aGk=", "isBase64Encoded": True,
        "headers": {"content-type": "image/png"}}),
     200, [("content-type", "image/png")], b"hi"),
    (j({"statusCode": 200, "body": base64.b64encode(b"\x00\xff").decode(), "isBase64Encoded": True}),
     200, [CT_JSON], b"\x00\xff"),
    (j({"statusCode": 200, "body": "aGk=", "isBase64Encoded": False}), 200, [CT_JSON], b"aGk="),
    (j({"statusCode": 200, "body": "", "isBase64Encoded": True}), 200, [CT_JSON], b""),
    (j({"statusCode": 200}), 200, [CT_JSON], b""),
    (j({"statusCode": 200, "body": None}), 200, [CT_JSON], b""),
    (j({"statusCode": 200, "body": ""}), 200, [CT_JSON], b""),
    (j({"statusCode": 200, "body": "naïve ✓"}), 200, [CT_JSON], "naïve ✓".encode()),
    (j({"statusCode": 200, "body": {"k": [1, 2]}}), 200, [CT_JSON], b'{"k": [1, 2]}'),
    (j({"statusCode": 200, "body": [1, None]}), 200, [CT_JSON], b"[1, null]"),
    (j({"statusCode": 200, "body": 5}), 200, [CT_JSON], b"5"),
    # Content-Type is added only when the function gave none, whatever the case of its name
    (j({"statusCode": 200, "headers": {"Content-Type": "text/html"}, "body": "<p>"}),
     200, [("Content-Type", "text/html")], b"<p>"),
    (j({"statusCode": 200, "headers": {"content-type": "text/html"}, "body": "<p>"}),
     200, [("content-type", "text/html")], b"<p>"),
    (j({"statusCode": 200, "headers": {"CONTENT-TYPE": "text/csv"}}),
     200, [("CONTENT-TYPE", "text/csv")], b""),
    (j({"statusCode": 302, "headers": {"Location": "/x"}}), 302, [("Location", "/x"), CT_JSON], b""),
]


@pytest.mark.parametrize(("result", "status", "headers", "body"), RESPONSES)
def test_to_response(result: bytes, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    assert to_response(result) == HttpResponse(status, headers, body)


@pytest.mark.parametrize("result", [
    j({"statusCode": "teapot"}),
    j({"statusCode": "2OO"}),
    j({"statusCode": ""}),
    j({"statusCode": 99}),
    j({"statusCode": 100}),  # 1xx is not a final answer
    # Headers that would break or forge the response framing.
    j({"statusCode": 200, "headers": {"x": "a\r\nSet-Cookie: evil=1"}}),
    j({"statusCode": 200, "headers": {"bad name": "v"}}),
    j({"statusCode": 200, "cookies": ["a=b\r\nX: y"]}),
    j({"statusCode": 600}),
    j({"statusCode": "600"}),
    j({"statusCode": -200}),
    j({"statusCode": True}),
    j({"statusCode": False}),
    j({"statusCode": None}),
    j({"statusCode": [200]}),
    j({"statusCode": {"code": 200}}),
    j({"statusCode": 200, "headers": ["Content-Type", "text/plain"]}),
    j({"statusCode": 200, "headers": "Content-Type: text/plain"}),
    j({"statusCode": 200, "cookies": "a=1"}),
    j({"statusCode": 200, "cookies": {"a": "1"}}),
    j({"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}),
    j({"statusCode": 200, "body": "aGk", "isBase64Encoded": True}),
    b'{"statusCode": 200',
    b"{not json}",
    b"  {",
    b'{"statusCode": 200, "body": "\xff"}',
])
def test_to_response_malformed_is_502(result: bytes) -> None:
    got = to_response(result)
    assert got == HttpResponse(502, [CT_JSON], ISE)
    assert json.loads(got.body) == {"message": "Internal Server Error"}


def test_to_response_headers_are_fresh_lists() -> None:
    first = to_response(b"1")
    first.headers.append(("X-Extra", "1"))
    assert to_response(b"1").headers == [CT_JSON]
    assert to_response(j({"statusCode": 200})).headers == [CT_JSON]
    assert JSON_HEADERS == [CT_JSON]


# --- error_response ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "message", "body"), [
    (404, "Not Found", b'{"message": "Not Found"}'),
    (413, "Request Entity Too Large", b'{"message": "Request Entity Too Large"}'),
    (429, "Too Many Requests", b'{"message": "Too Many Requests"}'),
    (502, "Internal Server Error", ISE),
    (504, "Endpoint request timed out", b'{"message": "Endpoint request timed out"}'),
    (400, 'bad "quote"\n', b'{"message": "bad \\"quote\\"\\n"}'),
])
def test_error_response(status: int, message: str, body: bytes) -> None:
    got = error_response(status, message)
    assert got == HttpResponse(status, [CT_JSON], body)
    assert json.loads(got.body) == {"message": message}


def test_error_response_headers_are_fresh_lists() -> None:
    error_response(404, "Not Found").headers.append(("X-Extra", "1"))
    assert error_response(404, "Not Found").headers == [CT_JSON]
    assert JSON_HEADERS == [CT_JSON]


def test_framing_headers_from_the_function_are_dropped() -> None:
    result = j({"statusCode": 200, "headers": {"Transfer-Encoding": "chunked", "Content-Length": "48",
                                               "Connection": "close", "X-Kept": "1"},
                "body": "0\r\n\r\nHTTP/1.1 200 OK\r\n"})
    response = to_response(result)
    assert response.status == 200
    names = [name.lower() for name, _ in response.headers]
    assert "transfer-encoding" not in names and "content-length" not in names
    assert "connection" not in names and "x-kept" in names


PROXIES = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(("remote", "xff", "forwarded", "trusted", "expected"), [
    pytest.param("203.0.113.9", "", "", PROXIES, "203.0.113.9", id="direct"),
    pytest.param("203.0.113.9", "1.2.3.4", "", PROXIES, "203.0.113.9", id="untrusted-peer-ignored"),
    pytest.param("10.0.0.5", "198.51.100.7", "", PROXIES, "198.51.100.7", id="one-balancer"),
    pytest.param("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.1.1.1", "", PROXIES, "198.51.100.7",
                 id="spoofed-left-part-skipped"),
    pytest.param("10.0.0.5", "10.2.2.2, 10.1.1.1", "", PROXIES, "10.2.2.2", id="all-trusted"),
    pytest.param("10.0.0.5", "", 'for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"', PROXIES,
                 "2001:db8::1", id="forwarded-ipv6"),
    pytest.param("10.0.0.5", "", "for=192.0.2.60:8080", PROXIES, "192.0.2.60", id="forwarded-port"),
    pytest.param("10.0.0.5", "198.51.100.7", "", [], "10.0.0.5", id="no-proxies-configured"),
    pytest.param("10.0.0.5", "not-an-ip", "", PROXIES, "not-an-ip", id="garbage-is-the-client"),
])
def test_client_ip(remote: str, xff: str, forwarded: str, trusted: list[Any],
                   expected: str) -> None:
    assert apigw.client_ip(remote, xff, forwarded, trusted) == expected
