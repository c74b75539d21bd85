"""HTTP triggers and function URLs end to end: API Gateway v2 events and responses."""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
from conftest import Daemon, function_toml


def trigger(route: str, auth: str = "none") -> str:
    return f'[[functions.triggers]]\ntype = "http"\nroute = "{route}"\nauth = "{auth}"\n'


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    functions = "".join([
        function_toml("echo", "web.echo", url={"auth": "none"}) + trigger("GET /items/{id}")
        + trigger("ANY /files/{path+}"),
        function_toml("listing", "web.plain") + trigger("GET /items/list"),
        function_toml("text", "web.text") + trigger("POST /text"),
        function_toml("binary", "web.binary") + trigger("GET /binary"),
        function_toml("bad", "web.bad_status") + trigger("GET /bad"),
        function_toml("raises", "web.raises") + trigger("GET /raises"),
        function_toml("slow", "web.sleeps", timeout_s=1) + trigger("GET /slow"),
        function_toml("patient", "web.naps", timeout_s=5) + trigger("GET /patient"),
        function_toml("off", "web.plain", max_workers=0) + trigger("GET /off"),
        function_toml("private", "web.plain") + trigger("GET /private", auth="token"),
        function_toml("nourl", "web.plain", url={"enabled": False}),
    ])
    return make_daemon(functions, server='tokens = ["s3cret-token"]\nbody_timeout_s = 1\n'
                                         'keepalive_timeout_s = 1')


def test_route_event_has_api_gateway_v2_shape(daemon: Daemon) -> None:
    r = daemon.request("GET", "/items/42?a=1&a=2&b=x%20y", headers={
        "Cookie": "c1=v1; c2=v2", "X-Multi": "one", "User-Agent": "pytest"})
    assert r.status == 200, r
    assert r.headers["x-custom"] == "1"
    event = r.json()
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["rawPath"] == "/items/42"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"id": "42"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["x-multi"] == "one"
    assert all(name == name.lower() for name in event["headers"])
    http = event["requestContext"]["http"]
    assert http == {"method": "GET", "path": "/items/42", "protocol": "HTTP/1.1",
                    "sourceIp": "127.0.0.1", "userAgent": "pytest"}
    context = event["requestContext"]
    assert context["routeKey"] == "GET /items/{id}" and context["stage"] == "$default"
    assert context["requestId"] == r.headers["apigw-requestid"]
    assert isinstance(context["timeEpoch"], int) and context["time"].endswith("+0000")
    assert event["isBase64Encoded"] is False and "body" not in event


def test_response_cookies_become_set_cookie_headers(daemon: Daemon) -> None:
    conn_headers = daemon.request("GET", "/items/1").headers
    assert conn_headers["Set-Cookie"]  # http.client folds repeats; both are present below
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", daemon.port)
    conn.request("GET", "/items/1")
    response = conn.getresponse()
    assert response.headers.get_all("Set-Cookie") == ["a=b; Path=/", "c=d"]
    conn.close()


def test_most_specific_route_wins(daemon: Daemon) -> None:
    assert daemon.request("GET", "/items/list").json() == {"hello": "world"}
    assert daemon.request("GET", "/items/7").json()["pathParameters"] == {"id": "7"}
    greedy = daemon.request("DELETE", "/files/a/b/c.txt").json()
    assert greedy["pathParameters"] == {"path": "a/b/c.txt"}
    assert greedy["routeKey"] == "ANY /files/{path+}"


def test_text_and_binary_request_bodies(daemon: Daemon) -> None:
    text = daemon.request("PUT", "/files/x", b'{"k": "v"}', {"Content-Type": "application/json"}).json()
    assert text["body"] == '{"k": "v"}' and text["isBase64Encoded"] is False
    raw = bytes(range(256))
    binary = daemon.request("PUT", "/files/x", raw, {"Content-Type": "image/png"}).json()
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == raw


def test_results_without_status_code_are_json_200(daemon: Daemon) -> None:
    r = daemon.request("POST", "/text", b"hi")
    assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
    assert json.loads(r.body) == "just a string"


def test_base64_response_body_is_decoded(daemon: Daemon) -> None:
    r = daemon.request("GET", "/binary")
    assert r.status == 201
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.body == bytes(range(256))


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/raises", 502, "Internal Server Error"),
    ("/bad", 502, "Internal Server Error"),
    ("/slow", 504, "Endpoint request timed out"),
    ("/off", 429, "Too Many Requests"),
    ("/nowhere", 403, "Forbidden"),  # anonymous, on a daemon with credentials: it says nothing
    ("/private", 403, "Forbidden"),
])
def test_failures_map_to_gateway_statuses(daemon: Daemon, path: str, status: int, message: str) -> None:
    r = daemon.request("GET", path)
    assert r.status == status, r
    assert r.json() == {"message": message}


def test_token_auth_on_a_trigger(daemon: Daemon) -> None:
    ok = daemon.request("GET", "/private", headers={"Authorization": "Bearer s3cret-token"})
    assert ok.status == 200 and ok.json() == {"hello": "world"}
    wrong = daemon.request("GET", "/private", headers={"Authorization": "Bearer nope"})
    assert wrong.status == 403
    missing = daemon.request("GET", "/nowhere", headers={"Authorization": "Bearer s3cret-token"})
    assert missing.status == 404 and missing.json() == {"message": "Not Found"}


def test_function_url_routes_any_method_and_path(daemon: Daemon) -> None:
    event = daemon.request("PATCH", "/urls/echo/deep/path?q=1", b"x",
                           {"Content-Type": "text/plain"}).json()
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/deep/path"
    assert event["requestContext"]["http"]["method"] == "PATCH"
    assert event["body"] == "x"
    assert daemon.request("GET", "/urls/echo").json()["rawPath"] == "/"
    token = {"Authorization": "Bearer s3cret-token"}
    assert daemon.request("GET", "/urls/nourl/x", headers=token).status == 404
    assert daemon.request("GET", "/urls/missing/x", headers=token).status == 404
    # Anonymous: the same 403 for a function with a protected URL, with none, or none at all.
    for name in ("listing", "nourl", "missing"):
        assert daemon.request("GET", f"/urls/{name}/x").status == 403


def test_function_url_path_is_the_raw_path_after_the_name_as_sent(daemon: Daemon) -> None:
    event = daemon.request("GET", "/urls/%65cho/a%20b/c?q=1").json()  # %65 is "e"
    assert event["rawPath"] == "/a%20b/c"
    assert event["requestContext"]["http"]["path"] == "/a%20b/c"


def test_body_over_the_limit_is_413_before_it_is_read(daemon: Daemon) -> None:
    r = daemon.request("POST", "/urls/echo/x", b"x" * (6 * 1024 * 1024 + 1))
    assert r.status == 413


def test_http_invocations_are_metered_with_their_source(daemon: Daemon) -> None:
    r = daemon.request("GET", "/items/9")
    record = daemon.record(r.headers["apigw-requestid"])
    assert record["source"] == "http" and record["outcome"] == "success"
    r = daemon.request("GET", "/urls/echo/9")
    assert daemon.record(r.headers["apigw-requestid"])["source"] == "url"


def test_slow_body_times_out_with_408(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(b"POST /urls/echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123")
        started = time.monotonic()
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert time.monotonic() - started < 5


@pytest.mark.parametrize("sent", [
    b"",  # connected, then nothing
    b"GET /urls/echo/x HTTP/1.1\r\nHost: x\r\nX-Slow: 1",  # headers that never end
])
def test_slow_or_silent_client_is_disconnected(daemon: Daemon, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by the server, answering nothing
        assert 0.5 < time.monotonic() - started < 5


def test_request_running_past_the_keepalive_timeout_still_gets_its_answer(daemon: Daemon) -> None:
    started = time.monotonic()
    r = daemon.request("GET", "/patient")  # 1.5 s of work; the connection's idle limit is 1 s
    assert (r.status, r.body) == (200, b"rested"), r
    assert time.monotonic() - started >= 1.5


def test_keep_alive_connection_serves_requests_then_closes_when_idle(daemon: Daemon) -> None:
    request = b"GET /urls/echo/k HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                head += sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head
        time.sleep(0.3)  # well inside the timeout: still open
        sock.sendall(request)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        while sock.recv(65536):  # the rest of that response, then the close
            pass
        assert 0.5 < time.monotonic() - started < 5


@pytest.mark.parametrize(("path", "headers"), [
    ("/urls/echo/" + "a" * 10_000, {}),
    ("/items/1", {"X-Big": "b" * 10_000}),
])
def test_oversized_url_or_header_is_a_400_not_a_crash(daemon: Daemon, path: str,
                                                      headers: dict[str, str]) -> None:
    r = daemon.request("GET", path, headers=headers)
    assert r.status in (400, 414, 431), r
    assert daemon.request("GET", "/items/1").status == 200


def test_expect_100_continue_is_answered_before_the_body_is_sent(daemon: Daemon) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(b"POST /urls/echo/x HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        reply = b""
        while b"}" not in reply.rpartition(b"\r\n\r\n")[2]:
            reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["body"] == "hello"


def test_unknown_expectation_is_417_and_an_empty_one_is_none(daemon: Daemon) -> None:
    r = daemon.request("POST", "/urls/echo/x", b"{}", {"Expect": "something-else"})
    assert r.status == 417, r
    assert daemon.request("POST", "/urls/echo/x", b"{}", {"Expect": ""}).status == 200


def test_an_encoded_slash_stays_in_the_function_name(daemon: Daemon) -> None:
    token = {"Authorization": "Bearer s3cret-token"}
    assert daemon.request("GET", "/urls/echo%2Fa/b", headers=token).status == 404  # no "echo/a"


def test_source_ip_is_the_forwarded_client_only_behind_a_trusted_proxy(make_daemon) -> None:  # type: ignore[no-untyped-def]
    def source_ip(d: Daemon, headers: dict[str, str]) -> str:
        r = d.request("GET", "/urls/echo/x", headers=headers)
        return json.loads(r.body)["requestContext"]["http"]["sourceIp"]

    behind = make_daemon(function_toml("echo", "web.echo", url={"auth": "none"}),
                         server='trusted_proxies = ["127.0.0.0/8"]')
    assert source_ip(behind, {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"}) == "198.51.100.7"
    assert source_ip(behind, {"Forwarded": "for=192.0.2.60;proto=https"}) == "192.0.2.60"
    assert source_ip(behind, {}) == "127.0.0.1"
    direct = make_daemon(function_toml("echo", "web.echo", url={"auth": "none"}))
    assert source_ip(direct, {"X-Forwarded-For": "198.51.100.7"}) == "127.0.0.1"
