"""HTTP trigger routes in API Gateway HTTP API syntax, and which route a request takes.

A route is ``METHOD /path`` or ``ANY /path`` (or ``$default``). Path segments are literals,
``{name}`` (one segment) or a final ``{name+}`` (one or more segments, greedy). As in API Gateway,
the most specific route wins: a full match beats a greedy one; between those of a kind, compared
segment by segment from the left, a literal beats a parameter, which beats a greedy parameter;
then a named method beats ANY; ``$default`` takes what nothing else does. Pure functions, tested with tables.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY")
_PARAM = re.compile(r"\{([A-Za-z0-9_.-]+)(\+?)\}")
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]+")

Kind = Literal["literal", "param", "greedy"]


class RouteError(ValueError):
    """A route that is not in API Gateway's syntax; the message says what is wrong."""


class Segment(msgspec.Struct, frozen=True):
    kind: Kind
    text: str  # the literal, or the parameter's name


class Route(msgspec.Struct, frozen=True):
    key: str  # as written: "GET /items/{id}"; it is the event's routeKey
    method: str  # GET … or ANY; "$default" for the default route
    segments: tuple[Segment, ...]
    target: str  # the function
    auth: str = "auto"  # the trigger's auth (router.config.Auth)


def parse_route(key: str, target: str = "", auth: str = "auto") -> Route:
    key = key.strip()
    if key == "$default":
        return Route(key, "$default", (), target, auth)
    method, _, path = key.partition(" ")
    if method not in METHODS:
        raise RouteError(f"route {key!r}: the method must be one of {', '.join(METHODS)}")
    if not path.startswith("/"):
        raise RouteError(f"route {key!r}: the path must start with '/'")
    segments: list[Segment] = []
    parts = _parts(path)
    seen: set[str] = set()
    for i, part in enumerate(parts):
        m = _PARAM.fullmatch(part)
        if m:
            greedy = bool(m[2])
            if greedy and i != len(parts) - 1:
                raise RouteError(f"route {key!r}: a greedy parameter {{{m[1]}+}} must come last")
            if m[1] in seen:
                raise RouteError(f"route {key!r}: parameter {m[1]!r} appears twice")
            seen.add(m[1])
            segments.append(Segment("greedy" if greedy else "param", m[1]))
        elif _LITERAL.fullmatch(part):
            segments.append(Segment("literal", part))
        else:
            raise RouteError(f"route {key!r}: {part!r} is not a path segment or {{parameter}}")
    return Route(key, method, tuple(segments), target, auth)


def _parts(path: str) -> list[str]:
    """``/a/b`` → ``["a", "b"]``; the root path has no segments."""
    return path.split("/")[1:] if path != "/" else []


def _match(route: Route, parts: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for i, segment in enumerate(route.segments):
        if segment.kind == "greedy":
            rest = parts[i:]
            if not rest or rest == [""]:
                return None
            params[segment.text] = "/".join(rest)
            return params
        if i >= len(parts):
            return None
        if segment.kind == "literal":
            if parts[i] != segment.text:
                return None
        elif not parts[i]:
            return None
        else:
            params[segment.text] = parts[i]
    return params if len(parts) == len(route.segments) else None


_RANK = {"literal": 0, "param": 1, "greedy": 2}


def specificity(route: Route) -> tuple[object, ...]:
    """Smaller sorts first: more specific."""
    greedy = bool(route.segments) and route.segments[-1].kind == "greedy"
    return (route.method == "$default", greedy, tuple(_RANK[s.kind] for s in route.segments),
            route.method == "ANY")


class RouteTable:
    """Routes sorted most specific first; ``match`` returns the first that fits."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = sorted(routes, key=specificity)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        parts = _parts(path)
        method = method.upper()
        for route in self.routes:
            if route.method not in (method, "ANY", "$default"):
                continue
            params = {} if route.method == "$default" else _match(route, parts)
            if params is not None:
                return route, params
        return None

    def conflicts(self) -> list[tuple[Route, Route]]:
        """Pairs of routes with the same method and the same shape (API Gateway refuses them)."""
        seen: dict[tuple[object, ...], Route] = {}
        pairs = []
        for route in self.routes:
            shape = (route.method, tuple(s.kind if s.kind != "literal" else s.text
                                         for s in route.segments))
            if shape in seen:
                pairs.append((seen[shape], route))
            else:
                seen[shape] = route
        return pairs
