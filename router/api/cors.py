"""A function URL's CORS, as Lambda serves it from the URL's ``Cors`` settings: preflights are
answered without invoking the function, and the responses to allowed origins carry the headers
that let a browser read them. Pure: headers in, headers out.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.config import Cors


def allowed_origin(cors: Cors, origin: str) -> str | None:
    """The ``Access-Control-Allow-Origin`` for a request from ``origin``, or None if it is not
    allowed. ``*`` allows any origin; with credentials the origin itself is named, since browsers
    refuse ``*`` then."""
    if not origin:
        return None
    allowed = [o.lower() for o in cors.allow_origins]
    if "*" in allowed:
        return origin if cors.allow_credentials else "*"
    return origin if origin.lower() in allowed else None


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return method == "OPTIONS" and "Origin" in headers and \
        "Access-Control-Request-Method" in headers


def _common(cors: Cors, origin: str) -> dict[str, str]:
    out = {"Access-Control-Allow-Origin": origin}
    if origin != "*":
        out["Vary"] = "Origin"
    if cors.allow_credentials:
        out["Access-Control-Allow-Credentials"] = "true"
    return out


def preflight_headers(cors: Cors, headers: Mapping[str, str]) -> dict[str, str]:
    """The answer to a preflight: what may be sent, for how long; nothing for an origin, method
    or header that is not allowed (the browser then refuses the request)."""
    origin = allowed_origin(cors, headers.get("Origin", ""))
    method = headers.get("Access-Control-Request-Method", "").upper()
    methods = [m.upper() for m in cors.allow_methods]
    if origin is None or not ("*" in methods or method in methods):
        return {}
    wanted = [h.strip() for h in headers.get("Access-Control-Request-Headers", "").split(",")
              if h.strip()]
    allowed = {h.lower() for h in cors.allow_headers}
    if "*" not in allowed and any(h.lower() not in allowed for h in wanted):
        return {}
    out = _common(cors, origin)
    out["Access-Control-Allow-Methods"] = method if "*" in methods else ", ".join(methods)
    if wanted:
        out["Access-Control-Allow-Headers"] = ", ".join(wanted)
    if cors.max_age:
        out["Access-Control-Max-Age"] = str(cors.max_age)
    return out


def response_headers(cors: Cors, headers: Mapping[str, str]) -> dict[str, str]:
    """What a response to an allowed origin carries."""
    origin = allowed_origin(cors, headers.get("Origin", ""))
    if origin is None:
        return {}
    out = _common(cors, origin)
    if cors.expose_headers:
        out["Access-Control-Expose-Headers"] = ", ".join(cors.expose_headers)
    return out
