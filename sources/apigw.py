"""API Gateway HTTP API payload 2.0: an HTTP request as the event, the function's result as the
response. Pure functions (no aiohttp), so the shaping is tested with tables.

Request: header names lower-cased and repeats comma-joined; cookies moved out of the headers into
``cookies``; query parameters decoded with repeats comma-joined; ``body`` as text when the content
type is textual and the bytes are UTF-8, else base64 with ``isBase64Encoded``; keys that would be
empty (``cookies``, ``queryStringParameters``, ``pathParameters``, ``body``) left out, as AWS does.

Response: a JSON object with ``statusCode`` gives status, headers, cookies and body (decoded from
base64 when ``isBase64Encoded``); any other JSON value is a 200 ``application/json`` body, as is.
"""

from __future__ import annotations

import base64
import binascii
import functools
import ipaddress
import json
import re
import time
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qsl

import msgspec

TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml",
              "application/x-www-form-urlencoded", "application/xhtml+xml", "application/ld+json",
              "application/graphql", "application/yaml", "+json", "+xml")

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class HttpRequest(msgspec.Struct, frozen=True):
    """What the event is made of, taken from the HTTP request by the source."""

    method: str
    raw_path: str  # the path the function sees (a function URL's, without /urls/NAME)
    raw_query: str
    headers: tuple[tuple[str, str], ...]  # as received, in order
    body: bytes
    source_ip: str
    protocol: str = "HTTP/1.1"


@functools.lru_cache(maxsize=256)  # a service sees few distinct content types
def is_text(content_type: str) -> bool:
    content_type = content_type.lower()
    return not content_type or any(t in content_type for t in TEXT_TYPES)


@functools.lru_cache(maxsize=4)
def clf_time(epoch: float | int) -> str:
    """``27/Nov/2026:02:21:39 +0000``, requestContext.time's format (whole seconds, so the last
    few are cached: every request of a second shares one)."""
    t = time.gmtime(int(epoch))
    return f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:" \
           f"{t.tm_sec:02d} +0000"


def joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


class Http(msgspec.Struct):
    """``requestContext.http``. The event's Structs spell fields as AWS does, in camelCase."""

    method: str
    path: str
    protocol: str
    sourceIp: str
    userAgent: str


class RequestContext(msgspec.Struct):
    accountId: str
    apiId: str
    domainName: str
    domainPrefix: str
    http: Http
    requestId: str
    routeKey: str
    stage: str
    time: str
    timeEpoch: int


class Event(msgspec.Struct, omit_defaults=True):
    """The payload 2.0 event. Built positionally (keywords cost a Struct several times as much),
    so the keys that may be absent come last; JSON objects have no order to keep."""

    version: str
    routeKey: str
    rawPath: str
    rawQueryString: str
    headers: dict[str, str]
    requestContext: RequestContext
    isBase64Encoded: bool
    cookies: list[str] | None = None
    queryStringParameters: dict[str, str] | None = None
    pathParameters: dict[str, str] | None = None
    body: str | None = None


def build_event(req: HttpRequest, *, route_key: str, path_params: dict[str, str],
                request_id: str, account_id: str, api_id: str, now: float) -> Event:
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in req.headers:
        name = name.lower()
        if name == "cookie":
            cookies += [c for c in (c.strip() for c in value.split(";")) if c]
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    host = headers.get("host", "")
    domain = host if host.startswith("[") else host.rsplit(":", 1)[0]  # without the port
    query = joined(parse_qsl(req.raw_query, keep_blank_values=True)) if req.raw_query else None
    context = RequestContext(
        account_id, api_id, domain, domain.split(".", 1)[0],
        Http(req.method, req.raw_path, req.protocol, req.source_ip, headers.get("user-agent", "")),
        request_id, route_key, "$default", clf_time(int(now)), int(now * 1000))
    body = req.body
    text = None
    if body and is_text(headers.get("content-type", "")):
        text = _utf8(body)
    encoded = bool(body) and text is None
    if encoded:
        text = base64.b64encode(body).decode()
    return Event("2.0", route_key, req.raw_path, req.raw_query, headers, context, encoded,
                 cookies or None, query or None, path_params or None, text)


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


class HttpResponse(msgspec.Struct):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


JSON_HEADERS = [("Content-Type", "application/json")]
# The server frames the response itself: a function's framing or hop-by-hop headers would let it
# forge a second response to a proxy in front.
FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
           "upgrade", "proxy-authenticate", "proxy-authorization", "proxy-connection"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_UNSAFE = re.compile(r"[\r\n\0]")


def error_response(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, list(JSON_HEADERS), json.dumps({"message": message}).encode())


def to_response(result: bytes) -> HttpResponse:
    """Map a successful function result to the HTTP response, by API Gateway's rules."""
    if not result.lstrip().startswith(b"{"):
        return HttpResponse(200, list(JSON_HEADERS), result)
    try:
        value = msgspec.json.decode(result)
    except ValueError:  # not JSON, or not UTF-8
        return error_response(502, "Internal Server Error")
    if not isinstance(value, dict) or "statusCode" not in value:
        return HttpResponse(200, list(JSON_HEADERS), result)
    try:
        return _shaped(value)
    except (TypeError, ValueError, binascii.Error):
        # A malformed statusCode response is the function's fault: API Gateway answers 502.
        return error_response(502, "Internal Server Error")


def response_head(status: object, raw_headers: object,
                  cookies: object) -> tuple[int, list[tuple[str, str]]]:
    """A function's status, headers and cookies as they may leave (a buffered response's or a
    stream's prelude): framing headers dropped; TypeError or ValueError for what would break or
    forge the response."""
    if isinstance(status, bool) or not isinstance(status, int | str):
        raise TypeError("statusCode")
    status = int(status)
    if not 200 <= status <= 599:  # 1xx are not final answers
        raise ValueError("statusCode")
    headers: list[tuple[str, str]] = []
    if not isinstance(raw_headers, dict):
        raise TypeError("headers")
    for name, v in raw_headers.items():
        text = v if isinstance(v, str) else json.dumps(v)
        if not _TOKEN.fullmatch(name) or _UNSAFE.search(text):
            raise ValueError("header")  # a header that would break or forge the response
        if name.lower() not in FRAMING:
            headers.append((name, text))
    if not isinstance(cookies, list):
        raise TypeError("cookies")
    if any(not isinstance(c, str) or _UNSAFE.search(c) for c in cookies):
        raise ValueError("cookies")
    return status, headers + [("Set-Cookie", c) for c in cookies]


def _shaped(value: dict[str, object]) -> HttpResponse:
    status, headers = response_head(value["statusCode"], value.get("headers") or {},
                                    value.get("cookies") or [])
    body = value.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        data = base64.b64decode(body, validate=True) if value.get("isBase64Encoded") else body.encode()
    else:
        data = json.dumps(body).encode()
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("Content-Type", "application/json"))
    return HttpResponse(status, headers, data)


def client_ip(remote: str, forwarded_for: str, forwarded: str,
              trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The caller's address for ``requestContext.http.sourceIp``: the connection's peer, unless
    that peer is a trusted proxy, in which case the address it forwarded (``X-Forwarded-For``, else
    RFC 7239's ``Forwarded: for=``), taken from the right past every trusted proxy, so a client
    cannot pass off an address of its choosing by sending the header itself."""
    if not trusted or not _in(remote, trusted):
        return remote
    if forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",")]
    else:
        hops = [_forwarded_for(part) for part in forwarded.split(",")] if forwarded else []
    address = remote
    for hop in reversed([h for h in hops if h]):
        address = hop
        if not _in(hop, trusted):
            break
    return address


def _forwarded_for(element: str) -> str:
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for":
            value = value.strip('"')
            if value.startswith("["):  # "[2001:db8::1]:4711"
                return value[1:value.find("]")]
            return value.rpartition(":")[0] if value.count(":") == 1 else value
    return ""


def _in(address: str, networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
