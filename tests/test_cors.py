"""Function URL CORS: preflights answered from the URL's Cors settings without invoking the
function, and allowed origins' responses carrying their headers. Tables for the pure part, then
the real daemon."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import Daemon, function_toml

from router.api.cors import allowed_origin, preflight_headers, response_headers
from router.config import Cors

SITE = Cors(allow_origins=["https://app.example.com"], allow_methods=["GET", "POST"],
            allow_headers=["content-type", "x-api-key"], expose_headers=["x-request-id"],
            max_age=600)
ANY = Cors(allow_origins=["*"], allow_methods=["*"], allow_headers=["*"])


@pytest.mark.parametrize(("cors", "origin", "expected"), [
    (SITE, "https://app.example.com", "https://app.example.com"),
    (SITE, "HTTPS://APP.EXAMPLE.COM", "HTTPS://APP.EXAMPLE.COM"),
    (SITE, "https://evil.example.com", None),
    (SITE, "", None),
    (ANY, "https://anywhere.test", "*"),
    (Cors(allow_origins=["*"], allow_credentials=True), "https://a.test", "https://a.test"),
])
def test_allowed_origin(cors: Cors, origin: str, expected: str | None) -> None:
    assert allowed_origin(cors, origin) == expected


@pytest.mark.parametrize(("cors", "request_headers", "expected"), [
    (SITE, {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, X-Api-Key"},
     {"Access-Control-Allow-Origin": "https://app.example.com", "Vary": "Origin",
      "Access-Control-Allow-Methods": "GET, POST",
      "Access-Control-Allow-Headers": "Content-Type, X-Api-Key", "Access-Control-Max-Age": "600"}),
    (SITE, {"Origin": "https://app.example.com", "Access-Control-Request-Method": "DELETE"}, {}),
    (SITE, {"Origin": "https://app.example.com", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-secret"}, {}),
    (SITE, {"Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"}, {}),
    (ANY, {"Origin": "https://b.test", "Access-Control-Request-Method": "PATCH",
           "Access-Control-Request-Headers": "x-anything"},
     {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "PATCH",
      "Access-Control-Allow-Headers": "x-anything"}),
])
def test_preflight_headers(cors: Cors, request_headers: dict[str, str],
                           expected: dict[str, str]) -> None:
    assert preflight_headers(cors, request_headers) == expected


def test_response_headers() -> None:
    assert response_headers(SITE, {"Origin": "https://app.example.com"}) == {
        "Access-Control-Allow-Origin": "https://app.example.com", "Vary": "Origin",
        "Access-Control-Expose-Headers": "x-request-id"}
    assert response_headers(SITE, {"Origin": "https://evil.example.com"}) == {}
    assert response_headers(Cors(allow_origins=["*"], allow_credentials=True),
                            {"Origin": "https://a.test"})["Access-Control-Allow-Credentials"] == "true"


def test_a_function_url_answers_preflights_and_tags_responses(
        make_daemon: Callable[..., Daemon]) -> None:
    toml = function_toml("web", "web.plain") + (
        '[functions.url]\nauth = "token"\n[functions.url.cors]\n'
        'allow_origins = ["https://app.example.com"]\nallow_methods = ["GET", "POST"]\n'
        'allow_headers = ["authorization", "content-type"]\nexpose_headers = ["x-request-id"]\n'
        "max_age = 300\n")
    daemon = make_daemon(toml, server='tokens = ["s3cret"]')
    before = len(daemon.records())
    pre = daemon.request("OPTIONS", "/urls/web/items", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert pre.status == 200  # without the token: a browser sends none with a preflight
    assert pre.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert pre.headers["Access-Control-Allow-Methods"] == "GET, POST"
    assert pre.headers["Access-Control-Max-Age"] == "300"
    assert len(daemon.records()) == before  # the function was not invoked
    denied = daemon.request("OPTIONS", "/urls/web/items", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in denied.headers
    r = daemon.request("GET", "/urls/web/items", headers={
        "Origin": "https://app.example.com", "Authorization": "Bearer s3cret"})
    assert r.status == 200
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert r.headers["Access-Control-Expose-Headers"] == "x-request-id"
    other = daemon.request("GET", "/urls/web/items", headers={
        "Origin": "https://evil.example.com", "Authorization": "Bearer s3cret"})
    assert other.status == 200 and "Access-Control-Allow-Origin" not in other.headers
    assert daemon.request("OPTIONS", "/urls/web/items").status == 403  # not a preflight: auth
    # A refusal is tagged too: without the header a browser could not read why it was refused.
    refused = daemon.request("GET", "/urls/web/items", headers={"Origin": "https://app.example.com"})
    assert refused.status == 403
    assert refused.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
