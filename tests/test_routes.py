"""Table tests of router.api.routes (parsing route keys, matching requests, specificity, conflicts) and
of router.api.dispatch.resolve (which handler serves a request)."""

from __future__ import annotations

import re

import pytest

from router.api import dispatch as app
from router.api import esm, layers, logs, management
from router.api.routes import Route, RouteError, RouteTable, Segment, parse_route, specificity
from sources import http_trigger, invoke_api


def lit(text: str) -> Segment:
    return Segment("literal", text)


def param(name: str) -> Segment:
    return Segment("param", name)


def greedy(name: str) -> Segment:
    return Segment("greedy", name)


def table(keys: list[str]) -> RouteTable:
    return RouteTable([parse_route(key, f"fn:{key}") for key in keys])


# --- parse_route: valid keys -------------------------------------------------------------------


@pytest.mark.parametrize(("key", "method", "segments"), [
    ("GET /", "GET", ()),
    ("GET /items", "GET", (lit("items"),)),
    ("GET /items/{id}", "GET", (lit("items"), param("id"))),
    ("ANY /files/{path+}", "ANY", (lit("files"), greedy("path"))),
    ("$default", "$default", ()),
    ("POST /a/{b}/c/{d}", "POST", (lit("a"), param("b"), lit("c"), param("d"))),
    ("DELETE /{proxy+}", "DELETE", (greedy("proxy"),)),
    ("PUT /v1.0/items~x/{item_id}", "PUT", (lit("v1.0"), lit("items~x"), param("item_id"))),
    ("PATCH /a/{p.q-r}", "PATCH", (lit("a"), param("p.q-r"))),
    ("HEAD /h", "HEAD", (lit("h"),)),
    ("OPTIONS /o/{x+}", "OPTIONS", (lit("o"), greedy("x"))),
])
def test_parse_route_valid(key: str, method: str, segments: tuple[Segment, ...]) -> None:
    route = parse_route(key, "target-fn")
    assert route == Route(key, method, segments, "target-fn")


@pytest.mark.parametrize(("key", "stripped"), [
    ("  GET /items  ", "GET /items"),
    ("\t$default\n", "$default"),
])
def test_parse_route_strips_surrounding_space(key: str, stripped: str) -> None:
    route = parse_route(key)
    assert route.key == stripped
    assert route.target == ""


# --- parse_route: invalid keys -----------------------------------------------------------------


@pytest.mark.parametrize(("key", "message"), [
    ("get /items", "route 'get /items': the method must be one of GET, POST, PUT, PATCH, DELETE, HEAD, "
                   "OPTIONS, ANY"),
    ("FETCH /items", "route 'FETCH /items': the method must be one of"),
    ("/items", "route '/items': the method must be one of"),
    ("default", "route 'default': the method must be one of"),
    ("GET items", "route 'GET items': the path must start with '/'"),
    ("GET", "route 'GET': the path must start with '/'"),
    ("GET /{p+}/x", "route 'GET /{p+}/x': a greedy parameter {p+} must come last"),
    ("GET /{a}/{a}", "route 'GET /{a}/{a}': parameter 'a' appears twice"),
    ("GET /{a}/{a+}", "route 'GET /{a}/{a+}': parameter 'a' appears twice"),
    ("GET /a{b}", "route 'GET /a{b}': 'a{b}' is not a path segment or {parameter}"),
    ("GET /{b}c", "route 'GET /{b}c': '{b}c' is not a path segment or {parameter}"),
    ("GET /{}", "route 'GET /{}': '{}' is not a path segment or {parameter}"),
    ("GET /a//b", "route 'GET /a//b': '' is not a path segment or {parameter}"),
    ("GET /items/", "route 'GET /items/': '' is not a path segment or {parameter}"),
    ("GET /a b", "route 'GET /a b': 'a b' is not a path segment or {parameter}"),
])
def test_parse_route_invalid(key: str, message: str) -> None:
    with pytest.raises(RouteError, match=re.escape(message)):
        parse_route(key)


def test_route_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must start with"):
        parse_route("GET x")


# --- RouteTable.match --------------------------------------------------------------------------

WITH_DEFAULT = [
    "GET /",
    "GET /items",
    "POST /items",
    "GET /items/special",
    "GET /items/{id}",
    "ANY /items/{rest+}",
    "ANY /files/{path+}",
    "GET /users/{uid}/posts/{pid}",
    "$default",
]

WITHOUT_DEFAULT = [
    "GET /",
    "GET /items",
    "GET /items/{id}",
    "ANY /files/{path+}",
]

METHODS_FIRST = [
    "ANY /items/{id}",
    "GET /items/{id}",
    "ANY /items/special",
    "ANY /things",
    "DELETE /things",
]

ROOT_GREEDY = [
    "ANY /{proxy+}",
    "GET /",
]

MATCH_CASES = [
    # literal beats param beats greedy
    (WITH_DEFAULT, "GET", "/items/special", "GET /items/special", {}),
    (WITH_DEFAULT, "GET", "/items/42", "GET /items/{id}", {"id": "42"}),
    (WITH_DEFAULT, "GET", "/items/42/parts", "ANY /items/{rest+}", {"rest": "42/parts"}),
    (WITH_DEFAULT, "GET", "/items", "GET /items", {}),
    (WITH_DEFAULT, "POST", "/items", "POST /items", {}),
    (WITH_DEFAULT, "get", "/items", "GET /items", {}),
    # a named method that does not fit falls through to ANY, then to $default
    (WITH_DEFAULT, "DELETE", "/items/42", "ANY /items/{rest+}", {"rest": "42"}),
    (WITH_DEFAULT, "DELETE", "/items/special", "ANY /items/{rest+}", {"rest": "special"}),
    (WITH_DEFAULT, "PUT", "/items", "$default", {}),
    (WITH_DEFAULT, "HEAD", "/", "$default", {}),
    # greedy takes one or more segments, joined back with "/"
    (WITH_DEFAULT, "GET", "/files/a", "ANY /files/{path+}", {"path": "a"}),
    (WITH_DEFAULT, "PATCH", "/files/a/b/c.txt", "ANY /files/{path+}", {"path": "a/b/c.txt"}),
    (WITH_DEFAULT, "GET", "/files/a/", "ANY /files/{path+}", {"path": "a/"}),
    (WITH_DEFAULT, "GET", "/files", "$default", {}),
    (WITH_DEFAULT, "GET", "/files/", "$default", {}),
    # trailing slash: an empty last segment fits neither a literal, a parameter nor a greedy
    (WITH_DEFAULT, "GET", "/items/", "$default", {}),
    (WITH_DEFAULT, "GET", "/items//x", "ANY /items/{rest+}", {"rest": "/x"}),
    # several parameters
    (WITH_DEFAULT, "GET", "/users/u1/posts/p2", "GET /users/{uid}/posts/{pid}", {"uid": "u1", "pid": "p2"}),
    (WITH_DEFAULT, "GET", "/users/u1/posts", "$default", {}),
    (WITH_DEFAULT, "GET", "/users/u1/posts/p2/x", "$default", {}),
    (WITH_DEFAULT, "GET", "/", "GET /", {}),
    (WITH_DEFAULT, "GET", "/nothing/here", "$default", {}),
    # no $default: nothing fits → None
    (WITHOUT_DEFAULT, "GET", "/", "GET /", {}),
    (WITHOUT_DEFAULT, "GET", "/items/7", "GET /items/{id}", {"id": "7"}),
    (WITHOUT_DEFAULT, "POST", "/items", None, None),
    (WITHOUT_DEFAULT, "POST", "/", None, None),
    (WITHOUT_DEFAULT, "GET", "/other", None, None),
    (WITHOUT_DEFAULT, "GET", "/items/", None, None),
    (WITHOUT_DEFAULT, "GET", "/items/1/2", None, None),
    (WITHOUT_DEFAULT, "GET", "/files", None, None),
    (WITHOUT_DEFAULT, "OPTIONS", "/files/x", "ANY /files/{path+}", {"path": "x"}),
    # a named method beats ANY for the same shape; the shape is compared first
    (METHODS_FIRST, "GET", "/items/1", "GET /items/{id}", {"id": "1"}),
    (METHODS_FIRST, "POST", "/items/1", "ANY /items/{id}", {"id": "1"}),
    (METHODS_FIRST, "GET", "/items/special", "ANY /items/special", {}),
    (METHODS_FIRST, "DELETE", "/things", "DELETE /things", {}),
    (METHODS_FIRST, "PUT", "/things", "ANY /things", {}),
    (METHODS_FIRST, "PUT", "/nope", None, None),
    # a greedy parameter at the root does not take "/"
    (ROOT_GREEDY, "GET", "/", "GET /", {}),
    (ROOT_GREEDY, "POST", "/", None, None),
    (ROOT_GREEDY, "POST", "/a/b", "ANY /{proxy+}", {"proxy": "a/b"}),
    (ROOT_GREEDY, "GET", "/a", "ANY /{proxy+}", {"proxy": "a"}),
    # only $default
    (["$default"], "GET", "/", "$default", {}),
    (["$default"], "POST", "/any/thing", "$default", {}),
    ([], "GET", "/", None, None),
]


@pytest.mark.parametrize(("keys", "method", "path", "want_key", "want_params"), MATCH_CASES)
def test_match(keys: list[str], method: str, path: str, want_key: str | None,
               want_params: dict[str, str] | None) -> None:
    for order in (keys, keys[::-1]):  # the answer does not depend on the order routes are given in
        found = table(order).match(method, path)
        if want_key is None:
            assert found is None
        else:
            assert found is not None
            route, params = found
            assert (route.key, params) == (want_key, want_params)
            assert route.target == f"fn:{want_key}"


def test_match_full_match_beats_greedy_with_earlier_literal() -> None:
    found = table(["GET /a/{proxy+}", "GET /{x}/b"]).match("GET", "/a/b")
    assert found is not None
    assert (found[0].key, found[1]) == ("GET /{x}/b", {"x": "a"})


# --- specificity -------------------------------------------------------------------------------

MOST_SPECIFIC_FIRST = [
    # Full matches first (a route without a greedy parameter), by their segments from the left.
    "GET /",
    "ANY /",
    "GET /items",
    "GET /items/special",
    "ANY /items/special",
    "GET /items/{id}",
    "ANY /items/{id}",
    "GET /{x}",
    "GET /{x}/special",
    # Then greedy routes, likewise.
    "GET /items/{rest+}",
    "ANY /items/{rest+}",
    "GET /{proxy+}",
    "$default",
]


@pytest.mark.parametrize("index", range(len(MOST_SPECIFIC_FIRST) - 1))
def test_specificity_neighbours(index: int) -> None:
    more = parse_route(MOST_SPECIFIC_FIRST[index])
    less = parse_route(MOST_SPECIFIC_FIRST[index + 1])
    assert specificity(more) < specificity(less)


@pytest.mark.parametrize(("more", "less"), [
    ("GET /a/b", "GET /a/{x}"),  # literal beats param
    ("GET /a/{x}", "GET /a/{x+}"),  # param beats greedy
    ("GET /a/b", "GET /a/{x+}"),  # literal beats greedy
    ("GET /a/{x}/{y+}", "GET /a/{x+}"),  # a param before the greedy beats an earlier greedy
    ("GET /a/{x}", "GET /{x}/b"),  # the leftmost difference decides
    ("POST /a", "ANY /a"),  # named method beats ANY
    ("ANY /a/b", "GET /a/{x}"),  # shape before method
    ("ANY /{x+}", "$default"),
    ("ANY /", "$default"),
])
def test_specificity_pairs(more: str, less: str) -> None:
    assert specificity(parse_route(more)) < specificity(parse_route(less))


@pytest.mark.parametrize("order", [
    MOST_SPECIFIC_FIRST[::-1],
    MOST_SPECIFIC_FIRST[1::2] + MOST_SPECIFIC_FIRST[::2],
    sorted(MOST_SPECIFIC_FIRST),
])
def test_route_table_sorts_most_specific_first(order: list[str]) -> None:
    assert [r.key for r in table(order).routes] == MOST_SPECIFIC_FIRST


# --- RouteTable.conflicts ----------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "pairs"), [
    (["GET /items/{id}", "GET /items/{name}"], [{"GET /items/{id}", "GET /items/{name}"}]),
    (["GET /items/{id}", "POST /items/{name}"], []),
    (["GET /items/{id}", "ANY /items/{name}"], []),
    (["GET /items/{id}", "GET /users/{id}"], []),
    (["GET /items/{id}", "GET /items/special"], []),
    (["GET /{a+}", "GET /{b+}"], [{"GET /{a+}", "GET /{b+}"}]),
    (["GET /{a}", "GET /{b+}"], []),
    (["GET /{a}/{b}", "GET /{b}/{a}"], [{"GET /{a}/{b}", "GET /{b}/{a}"}]),
    (["GET /a/{x}/c", "GET /a/{y}/c", "GET /a/{z}/c"],
     [{"GET /a/{x}/c", "GET /a/{y}/c"}, {"GET /a/{x}/c", "GET /a/{z}/c"}]),
    (["ANY /x/{p}", "ANY /x/{q}"], [{"ANY /x/{p}", "ANY /x/{q}"}]),
    (["GET /x", "GET /x"], [{"GET /x"}]),
    (["$default", "$default"], [{"$default"}]),
    (["$default", "ANY /"], []),
    (["GET /", "GET /a", "GET /{a}", "GET /{a+}", "$default"], []),
    ([], []),
])
def test_conflicts(keys: list[str], pairs: list[set[str]]) -> None:
    found = table(keys).conflicts()
    assert sorted(sorted({a.key, b.key}) for a, b in found) == sorted(sorted(p) for p in pairs)
    for a, b in found:
        assert a is not b


# --- router.api.dispatch.resolve: which handler serves a request ------------------------------------------

F = "/2015-03-31/functions"
L = "/2018-10-31/layers"


@pytest.mark.parametrize(("method", "path", "handler", "name"), [
    ("GET", "/urls/echo", http_trigger.function_url, "echo"),
    ("DELETE", "/urls/echo/a/b", http_trigger.function_url, "echo"),
    ("GET", "/urls/echo%2Fa/b", http_trigger.function_url, "echo/a"),  # an encoded slash stays
    ("GET", "/urls/a%25b/c", http_trigger.function_url, "a%b"),
    ("GET", "/urls/", http_trigger.route, ""),  # no name: a declared route's path, if any
    ("GET", "/urls", http_trigger.route, ""),
    ("GET", "/healthz", app.healthz, ""),
    ("HEAD", "/healthz", app.healthz, ""),
    ("GET", "/readyz", app.readyz, ""),
    ("GET", "/metrics", app.metrics, ""),
    ("POST", "/healthz", http_trigger.route, ""),  # a route may take the other methods
    ("GET", F, management.list_functions, ""),
    ("GET", F + "/", management.list_functions, ""),
    ("POST", F, management.create_function, ""),
    ("POST", F + "/", management.create_function, ""),
    ("PUT", F, app.unknown_operation, ""),
    ("POST", F + "/noop/invocations", invoke_api.invoke, "noop"),
    ("POST", F + "/arn:aws:lambda:us-east-1:123456789012:function:noop/invocations",
     invoke_api.invoke, "arn:aws:lambda:us-east-1:123456789012:function:noop"),
    ("GET", F + "/noop", management.get_function, "noop"),
    ("HEAD", F + "/noop", management.get_function, "noop"),
    ("DELETE", F + "/noop", management.delete_function, "noop"),
    ("GET", F + "/noop/configuration", management.get_configuration, "noop"),
    ("PUT", F + "/noop/configuration", management.update_configuration, "noop"),
    ("PUT", F + "/noop/code", management.update_code, "noop"),
    ("GET", F + "/noop/invocations", app.unknown_operation, ""),
    ("POST", F + "/noop%2Finvocations", app.unknown_operation, ""),
    ("GET", F + "/noop%2Fconfiguration", management.get_function, "noop/configuration"),
    ("POST", F + "/noop", app.unknown_operation, ""),
    ("GET", F + "/noop/", app.unknown_operation, ""),
    ("POST", F + "//invocations", app.unknown_operation, ""),
    ("GET", F + "/noop/code/more", app.unknown_operation, ""),
    ("GET", "/2018-10-30/layers", app.unknown_operation, ""),
    # Layers: NAME/versions and NAME/versions/NUMBER; LayerName may be an ARN.
    ("GET", L, layers.list_or_find, ""),
    ("GET", L + "/", layers.list_or_find, ""),
    ("POST", L + "/lib/versions", layers.publish, "lib"),
    ("GET", L + "/lib/versions", layers.list_versions, "lib"),
    ("GET", L + "/lib/versions/3", layers.get_version, "lib/3"),
    ("DELETE", L + "/lib/versions/3", layers.delete_version, "lib/3"),
    ("GET", L + "/arn%3Aaws%3Alambda%3Aus-east-1%3A1%3Alayer%3Alib/versions/1", layers.get_version,
     "arn:aws:lambda:us-east-1:1:layer:lib/1"),
    ("PUT", L + "/lib/versions/3", app.unknown_operation, ""),
    ("GET", L + "/lib", app.unknown_operation, ""),
    ("GET", L + "/lib/versions/", app.unknown_operation, ""),
    ("GET", L + "/lib/versions/3/x", app.unknown_operation, ""),
    ("GET", L + "//versions", app.unknown_operation, ""),
    ("GET", "/2018-10-31", http_trigger.route, ""),
    ("GET", "/items/1", http_trigger.route, ""),
    ("GET", "/", http_trigger.route, ""),
    # Event source mappings, by UUID.
    ("POST", "/2015-03-31/event-source-mappings/", esm.create_mapping, ""),
    ("POST", "/2015-03-31/event-source-mappings", esm.create_mapping, ""),
    ("GET", "/2015-03-31/event-source-mappings/", esm.list_mappings, ""),
    ("GET", "/2015-03-31/event-source-mappings/u-1", esm.get_mapping, "u-1"),
    ("PUT", "/2015-03-31/event-source-mappings/u-1", esm.update_mapping, "u-1"),
    ("DELETE", "/2015-03-31/event-source-mappings/u-1", esm.delete_mapping, "u-1"),
    ("POST", "/2015-03-31/event-source-mappings/u-1", app.unknown_operation, ""),
    # A function's recent log (headwater logs).
    ("GET", "/headwater/logs/noop", logs.get_logs, "noop"),
    ("HEAD", "/headwater/logs/noop", logs.get_logs, "noop"),
    ("GET", "/headwater/logs/", http_trigger.route, ""),
    ("GET", "/headwater/logs/noop/more", http_trigger.route, ""),
    ("POST", "/headwater/logs/noop", http_trigger.route, ""),
])
def test_resolve(method: str, path: str, handler: object, name: str) -> None:
    assert app.resolve(method, path) == (handler, name)
