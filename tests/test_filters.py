"""Event filtering as tables: which SQS records each pattern delivers (every operator, AND/OR,
body JSON and plain-string bodies, attributes and messageAttributes, arrays, missing fields), and
which patterns CreateEventSourceMapping refuses, with the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sources.filters import MAX_FILTERS, MAX_PATTERN_LENGTH, FilterError, Filters, compile_filters

ATTRIBUTES = {
    "ApproximateReceiveCount": "1",
    "SentTimestamp": "1545082649183",
    "SenderId": "AIDAIENQZJOLO23YVJ4VO",
    "ApproximateFirstReceiveTimestamp": "1545082649185",
}


def sqs_record(body: Any = "hello", **overrides: Any) -> dict[str, Any]:
    """A record shaped as Lambda hands it to a function (with-sqs-filtering's example). A body
    given as a dict or list is sent as its JSON text; a str is sent as is."""
    record = {
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a...",
        "body": body if isinstance(body, str) else json.dumps(body),
        "attributes": dict(ATTRIBUTES),
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-west-2:123456789012:my-queue",
        "awsRegion": "us-west-2",
    }
    record.update(overrides)
    return record


def string_attribute(value: str) -> dict[str, Any]:
    return {"stringValue": value, "stringListValues": [], "binaryListValues": [], "dataType": "String"}


def compile_any(patterns: list[Any]) -> Filters:
    """Patterns given as Python objects are sent as JSON; strings are sent verbatim, for the cases
    where the exact text of a number matters."""
    return compile_filters([p if isinstance(p, str) else json.dumps(p) for p in patterns])


def body(pattern: Any) -> dict[str, Any]:
    return {"body": pattern}


IMAGE = {"kind": string_attribute("image")}

MATCHES = [
    # --- equality, AND, OR (Lambda's SQS example: RequestCode) ---
    pytest.param([body({"RequestCode": ["BBBB"]})], {"RequestCode": "BBBB"}, {}, True, id="equals"),
    pytest.param([body({"RequestCode": ["BBBB"]})], {"RequestCode": "AAAA"}, {}, False, id="equals-other"),
    pytest.param([body({"RequestCode": ["bbbb"]})], {"RequestCode": "BBBB"}, {}, False,
                 id="equals-is-case-sensitive"),
    pytest.param([body({"RequestCode": ["AAAA", "BBBB"]})], {"RequestCode": "AAAA"}, {}, True, id="leaf-or"),
    pytest.param([body({"a": ["1"], "b": ["2"]})], {"a": "1", "b": "2"}, {}, True, id="and-both"),
    pytest.param([body({"a": ["1"], "b": ["2"]})], {"a": "1", "b": "3"}, {}, False, id="and-one-fails"),
    pytest.param([body({"a": ["1"], "b": ["2"]})], {"a": "1"}, {}, False, id="and-one-missing"),
    pytest.param([body({"order": {"status": ["paid"]}})], {"order": {"status": "paid", "id": 7}}, {}, True,
                 id="nested-object"),
    pytest.param([body({"order": {"status": ["paid"]}})], {"order": {"status": "open"}}, {}, False,
                 id="nested-object-other"),
    pytest.param([body({"order": {"status": ["paid"]}})], {"order": "paid"}, {}, False,
                 id="nested-object-but-scalar"),
    # --- numbers compare by their JSON text; only numeric compares values ---
    pytest.param([body({"n": [5]})], {"n": 5}, {}, True, id="number-equals"),
    pytest.param([body({"n": [5]})], '{"n": 5.0}', {}, False, id="number-text-differs"),
    pytest.param(['{"body": {"n": [300]}}'], '{"n": 3.0e2}', {}, False, id="number-exponent-differs"),
    pytest.param(['{"body": {"n": [3.0e2]}}'], '{"n": 3.0e2}', {}, True, id="number-same-text"),
    pytest.param([body({"n": [5]})], {"n": "5"}, {}, False, id="number-vs-string"),
    pytest.param([body({"n": ["5"]})], {"n": 5}, {}, False, id="string-vs-number"),
    pytest.param([body({"on": [True]})], {"on": True}, {}, True, id="bool"),
    pytest.param([body({"on": [True]})], {"on": 1}, {}, False, id="bool-vs-one"),
    pytest.param([body({"on": [1]})], {"on": True}, {}, False, id="one-vs-bool"),
    # --- null and empty are distinct, and neither is a missing field ---
    pytest.param([body({"user": [None]})], {"user": None}, {}, True, id="null"),
    pytest.param([body({"user": [None]})], {}, {}, False, id="null-vs-missing"),
    pytest.param([body({"user": [None]})], {"user": ""}, {}, False, id="null-vs-empty"),
    pytest.param([body({"name": [""]})], {"name": ""}, {}, True, id="empty"),
    pytest.param([body({"name": [""]})], {"name": None}, {}, False, id="empty-vs-null"),
    # --- string operators ---
    pytest.param([body({"region": [{"prefix": "us-"}]})], {"region": "us-east-1"}, {}, True, id="prefix"),
    pytest.param([body({"region": [{"prefix": "us-"}]})], {"region": "eu-us-1"}, {}, False,
                 id="prefix-other"),
    pytest.param([body({"code": [{"prefix": "1"}]})], {"code": 123}, {}, False, id="prefix-on-number"),
    pytest.param([body({"file": [{"suffix": ".png"}]})], {"file": "a/b.png"}, {}, True, id="suffix"),
    pytest.param([body({"file": [{"suffix": ".png"}]})], {"file": "a/b.png.gz"}, {}, False,
                 id="suffix-other"),
    pytest.param([body({"name": [{"equals-ignore-case": "alice"}]})], {"name": "ALIce"}, {}, True,
                 id="equals-ignore-case"),
    pytest.param([body({"name": [{"equals-ignore-case": "alice"}]})], {"name": "alicia"}, {}, False,
                 id="equals-ignore-case-other"),
    pytest.param([body({"key": [{"prefix": "img/"}, {"suffix": ".png"}]})], {"key": "doc/a.png"}, {}, True,
                 id="operators-or"),
    pytest.param([body({"key": [{"prefix": "img/"}, {"suffix": ".png"}]})], {"key": "doc/a.gif"}, {}, False,
                 id="operators-or-neither"),
    # --- anything-but ---
    pytest.param([body({"weather": [{"anything-but": ["Raining"]}]})], {"weather": "Sunny"}, {}, True,
                 id="anything-but-list"),
    pytest.param([body({"weather": [{"anything-but": ["Raining", "Snow"]}]})], {"weather": "Snow"}, {}, False,
                 id="anything-but-list-refused"),
    pytest.param([body({"state": [{"anything-but": "initializing"}]})], {"state": "initializing"}, {}, False,
                 id="anything-but-scalar"),
    pytest.param([body({"state": [{"anything-but": "initializing"}]})], {}, {}, False,
                 id="anything-but-missing"),
    pytest.param([body({"limit": [{"anything-but": [100, 200]}]})], {"limit": 100}, {}, False,
                 id="anything-but-numbers"),
    pytest.param([body({"limit": [{"anything-but": [100, 200]}]})], {"limit": 150}, {}, True,
                 id="anything-but-numbers-other"),
    pytest.param([body({"state": [{"anything-but": {"prefix": "init"}}]})], {"state": "running"}, {}, True,
                 id="anything-but-prefix"),
    pytest.param([body({"state": [{"anything-but": {"prefix": "init"}}]})], {"state": "initial"}, {}, False,
                 id="anything-but-prefix-refused"),
    pytest.param([body({"state": [{"anything-but": {"prefix": "init"}}]})], {"state": 5}, {}, True,
                 id="anything-but-prefix-number"),
    pytest.param([body({"file": [{"anything-but": {"suffix": ".png"}}]})], {"file": "a.png"}, {}, False,
                 id="anything-but-suffix-refused"),
    pytest.param([body({"file": [{"anything-but": {"suffix": ".png"}}]})], {"file": "a.jpg"}, {}, True,
                 id="anything-but-suffix"),
    # --- numeric ---
    pytest.param([body({"price": [{"numeric": ["=", 100]}]})], '{"price": 1.0e2}', {}, True,
                 id="numeric-equals-by-value"),
    pytest.param([body({"price": [{"numeric": ["=", 100]}]})], {"price": 100.5}, {}, False,
                 id="numeric-equals-other"),
    pytest.param([body({"price": [{"numeric": [">", 10, "<=", 20]}]})], {"price": 20}, {}, True,
                 id="numeric-range-top"),
    pytest.param([body({"price": [{"numeric": [">", 10, "<=", 20]}]})], {"price": 10}, {}, False,
                 id="numeric-range-bottom-open"),
    pytest.param([body({"price": [{"numeric": [">", 10, "<=", 20]}]})], {"price": 20.01}, {}, False,
                 id="numeric-range-above"),
    pytest.param([body({"price": [{"numeric": [">=", -1.5, "<", 0]}]})], {"price": -1.5}, {}, True,
                 id="numeric-negative"),
    pytest.param([body({"price": [{"numeric": ["<", 5]}]})], {"price": "4"}, {}, False,
                 id="numeric-on-string"),
    pytest.param([{"attributes": {"ApproximateReceiveCount": [{"numeric": [">=", 1]}]}}], "x", {}, False,
                 id="numeric-on-string-attribute"),
    # --- exists: leaves only ---
    pytest.param([body({"product": [{"exists": True}]})], {"product": "x"}, {}, True, id="exists"),
    pytest.param([body({"product": [{"exists": True}]})], {"other": "x"}, {}, False, id="exists-missing"),
    pytest.param([body({"product": [{"exists": False}]})], {"other": "x"}, {}, True, id="not-exists"),
    pytest.param([body({"product": [{"exists": False}]})], {"product": None}, {}, False,
                 id="not-exists-but-null"),
    pytest.param([body({"meta": [{"exists": True}]})], {"meta": {"x": 1}}, {}, False,
                 id="exists-on-object-is-not-a-leaf"),
    pytest.param([body({"meta": [{"exists": False}]})], {"meta": {"x": 1}}, {}, True,
                 id="not-exists-on-object"),
    pytest.param([body({"meta": {"x": [{"exists": False}]}})], {"other": 1}, {}, True,
                 id="not-exists-under-missing-parent"),
    pytest.param([body({"meta": {"x": ["1"]}})], {"other": 1}, {}, False, id="missing-parent"),
    # --- arrays in the record ---
    pytest.param([body({"tags": ["b"]})], {"tags": ["a", "b"]}, {}, True, id="record-array-any"),
    pytest.param([body({"tags": ["c"]})], {"tags": ["a", "b"]}, {}, False, id="record-array-none"),
    pytest.param([body({"tags": [{"exists": False}]})], {"tags": []}, {}, True, id="record-array-empty"),
    pytest.param([body({"items": {"sku": ["x"]}})], {"items": [{"sku": "y"}, {"sku": "x"}]}, {}, True,
                 id="array-of-objects"),
    pytest.param([body({"items": {"sku": ["x"], "qty": [2]}})],
                 {"items": [{"sku": "x", "qty": 1}, {"sku": "y", "qty": 2}]}, {}, False,
                 id="array-of-objects-same-element"),
    pytest.param([body({"a": [1]})], [{"a": 2}, {"a": 1}], {}, True, id="body-is-json-array"),
    # --- plain-string bodies, and Lambda's format check ---
    pytest.param([body(["hello"])], "hello", {}, True, id="plain-body"),
    pytest.param([body(["hello"])], "hello!", {}, False, id="plain-body-other"),
    pytest.param([body([{"prefix": "ORDER#"}])], "ORDER#17", {}, True, id="plain-body-prefix"),
    pytest.param([body([{"prefix": "{"}])], {"a": 1}, {}, False, id="plain-pattern-json-body-dropped"),
    pytest.param([body(["a"])], ["a"], {}, False, id="plain-pattern-json-array-body-dropped"),
    pytest.param([body([{"exists": False}])], {"a": 1}, {}, False,
                 id="plain-pattern-json-object-body-dropped"),
    pytest.param([body({"RequestCode": [{"exists": False}]})], "RequestCode=BBBB", {}, False,
                 id="json-pattern-plain-body-dropped"),
    pytest.param([body(["{oops"])], "{oops", {}, True, id="brace-but-not-json-is-plain"),
    pytest.param([body({"oops": [{"exists": False}]})], "{oops", {}, False, id="brace-but-not-json-dropped"),
    pytest.param([body(["42"])], "42", {}, True, id="scalar-json-body-is-plain"),
    pytest.param([body({"n": [{"exists": True}]})], '{"n": NaN}', {}, False, id="nan-body-is-not-json"),
    pytest.param([{"eventSource": ["aws:sqs"]}], "not json", {}, True, id="no-body-pattern-skips-check"),
    # --- attributes and messageAttributes ---
    pytest.param([{"attributes": {"ApproximateReceiveCount": ["1"]}}], "x", {}, True, id="attribute"),
    pytest.param([{"attributes": {"ApproximateReceiveCount": ["2"]}}], "x", {}, False, id="attribute-other"),
    pytest.param([{"messageAttributes": {"kind": {"stringValue": ["image"]}}}], "x",
                 {"messageAttributes": IMAGE}, True, id="message-attribute"),
    pytest.param([{"messageAttributes": {"kind": {"stringValue": ["image"]}}}], "x",
                 {"messageAttributes": {"kind": string_attribute("video")}}, False,
                 id="message-attribute-other"),
    pytest.param([{"messageAttributes": {"kind": {"stringValue": ["image"]}}}], "x", {}, False,
                 id="message-attribute-missing"),
    pytest.param([{"messageAttributes": {"kind": [{"exists": True}]}}], "x",
                 {"messageAttributes": IMAGE}, False, id="message-attribute-object-is-not-a-leaf"),
    pytest.param([{"messageAttributes": {"kind": {"dataType": [{"exists": True}]}}}], "x",
                 {"messageAttributes": IMAGE}, True, id="message-attribute-exists"),
    pytest.param([{"messageAttributes": {"tags": {"stringListValues": ["b"]}}}], "x",
                 {"messageAttributes": {"tags": {"stringListValues": ["a", "b"], "dataType": "String"}}},
                 True, id="message-attribute-list"),
    pytest.param([{"eventSourceARN": [{"suffix": ":my-queue"}]}], "x", {}, True, id="metadata-suffix"),
    pytest.param([{"awsRegion": ["eu-west-1"]}], "x", {}, False, id="metadata-other"),
    pytest.param([{"attributes": {"SenderId": ["AIDAIENQZJOLO23YVJ4VO"]}, "body": {"k": ["v"]}}],
                 {"k": "v"}, {}, True, id="metadata-and-body"),
    pytest.param([{"attributes": {"SenderId": ["someone-else"]}, "body": {"k": ["v"]}}], {"k": "v"}, {},
                 False, id="metadata-fails-body-matches"),
    # --- several filters are ORed ---
    pytest.param([], "anything", {}, True, id="no-filters"),
    pytest.param([body({"k": ["a"]}), body({"k": ["b"]})], {"k": "b"}, {}, True, id="filters-or"),
    pytest.param([body({"k": ["a"]}), body({"k": ["b"]})], {"k": "c"}, {}, False, id="filters-or-none"),
    pytest.param([body({"k": ["a"]}), body(["plain"])], "plain", {}, True, id="filters-json-and-plain"),
    pytest.param([body({"k": ["a"]}), body(["plain"])], {"k": "a"}, {}, True, id="filters-plain-and-json"),
    # --- a key given twice keeps its last value ---
    pytest.param(['{"body": {"k": ["a"], "k": ["b"]}}'], {"k": "a"}, {}, False, id="duplicate-key-first"),
    pytest.param(['{"body": {"k": ["a"], "k": ["b"]}}'], {"k": "b"}, {}, True, id="duplicate-key-last"),
]


@pytest.mark.parametrize(("patterns", "message_body", "overrides", "want"), MATCHES)
def test_matches(patterns: list[Any], message_body: Any, overrides: dict[str, Any], want: bool) -> None:
    record = sqs_record(message_body, **overrides)
    assert compile_any(patterns).matches(record) is want


def test_matching_leaves_the_record_as_it_was() -> None:
    filters = compile_any([body({"k": ["a"]})])
    record = sqs_record({"k": "a"})
    before = json.dumps(record, sort_keys=True)
    assert filters.matches(record)
    assert filters.matches(record)  # compiled once, used for every message
    assert json.dumps(record, sort_keys=True) == before


def test_limits_are_inclusive() -> None:
    longest = '{"body": ["x"]}'
    longest = longest[:-1] + " " * (MAX_PATTERN_LENGTH - len(longest)) + "}"
    assert len(longest) == MAX_PATTERN_LENGTH
    filters = compile_filters([longest] * MAX_FILTERS)
    assert len(filters) == MAX_FILTERS
    assert filters.matches(sqs_record("x"))
    assert filters.patterns == (longest,) * MAX_FILTERS


REFUSED = [
    pytest.param(["{body"], r"Filters\[0\]\.Pattern: not valid JSON", id="not-json"),
    pytest.param([""], "not valid JSON", id="empty-string"),
    pytest.param(['{"a": [NaN]}'], "not valid JSON", id="nan"),
    pytest.param(['["x"]'], "must be a JSON object", id="array-pattern"),
    pytest.param(['"x"'], "must be a JSON object", id="string-pattern"),
    pytest.param(["{}"], "empty objects are not allowed", id="empty-object"),
    pytest.param([{"body": {}}], "body: empty objects", id="empty-nested-object"),
    pytest.param([{"eventSource": "aws:sqs"}], "eventSource: must be an array", id="leaf-not-array"),
    pytest.param([{"body": {"k": 5}}], "body.k: must be an array or an object, got 5",
                 id="nested-leaf-not-array"),
    pytest.param([{"body": {"k": []}}], "body.k: the array is empty", id="empty-array"),
    pytest.param([{"body": {"k": [["x"]]}}], "arrays cannot be nested", id="nested-array"),
    pytest.param([{"body": {"k": [{"wildcard": "*.png"}]}}], "unknown operator 'wildcard'", id="wildcard"),
    pytest.param([{"body": {"k": [{"cidr": "10.0.0.0/24"}]}}], "unknown operator 'cidr'", id="cidr"),
    pytest.param([{"body": {"k": [{"starts-with": "x"}]}}], "unknown operator 'starts-with'", id="unknown"),
    pytest.param([{"$or": [{"a": ["1"]}, {"b": ["2"]}]}], r"\$or: not supported", id="or"),
    pytest.param([{"body": {"$or": [{"a": ["1"]}]}}], r"body\.\$or: not supported", id="nested-or"),
    pytest.param([{"k": [{"prefix": "a", "suffix": "b"}]}], "exactly one operator", id="two-operators"),
    pytest.param([{"k": [{}]}], "exactly one operator", id="no-operator"),
    pytest.param([{"k": [{"numeric": ["==", 5]}]}], "k: numeric takes", id="numeric-bad-op"),
    pytest.param([{"k": [{"numeric": ["=", "5"]}]}], "numeric takes", id="numeric-string"),
    pytest.param([{"k": [{"numeric": ["=", True]}]}], "numeric takes", id="numeric-bool"),
    pytest.param([{"k": [{"numeric": ["="]}]}], "numeric takes", id="numeric-short"),
    pytest.param([{"k": [{"numeric": 5}]}], "numeric takes", id="numeric-not-list"),
    pytest.param([{"k": [{"numeric": ["=", 1, "<", 2]}]}], "numeric takes", id="numeric-equals-range"),
    pytest.param([{"k": [{"numeric": ["<", 5, ">", 1]}]}], "numeric takes", id="numeric-range-reversed"),
    pytest.param([{"k": [{"numeric": [">", 10, "<", 5]}]}], "numeric range 10 to 5 is empty",
                 id="numeric-empty"),
    pytest.param([{"k": [{"numeric": [">", 5, "<=", 5]}]}], "is empty", id="numeric-empty-point"),
    pytest.param([{"k": [{"exists": "yes"}]}], "exists takes true or false", id="exists-not-bool"),
    pytest.param([{"k": [{"prefix": 5}]}], "prefix takes a string", id="prefix-not-string"),
    pytest.param([{"k": [{"suffix": None}]}], "suffix takes a string", id="suffix-not-string"),
    pytest.param([{"k": [{"equals-ignore-case": ["a"]}]}], "equals-ignore-case takes a string",
                 id="ignore-case-not-string"),
    pytest.param([{"k": [{"anything-but": ["a", 1]}]}], "strings only or numbers only",
                 id="anything-but-mixed"),
    pytest.param([{"k": [{"anything-but": []}]}], "strings only or numbers only", id="anything-but-empty"),
    pytest.param([{"k": [{"anything-but": None}]}], "strings only or numbers only", id="anything-but-null"),
    pytest.param([{"k": [{"anything-but": {"wildcard": "*"}}]}], "one prefix or suffix",
                 id="anything-but-wildcard"),
    pytest.param([{"k": [{"anything-but": {"prefix": 1}}]}], "anything-but prefix takes a string",
                 id="anything-but-prefix-not-string"),
    pytest.param([{"k": ["a"]}] * (MAX_FILTERS + 1), "6 filters exceed the limit of 5",
                 id="too-many-filters"),
    pytest.param(['{"k": ["a"]}' + " " * MAX_PATTERN_LENGTH], "characters exceed the limit of 4096",
                 id="too-long"),
    pytest.param([{"k": ["a"]}, {"k": "a"}], r"Filters\[1\]\.Pattern: k: must be an array",
                 id="names-the-filter"),
]


@pytest.mark.parametrize(("patterns", "reason"), REFUSED)
def test_refused(patterns: list[Any], reason: str) -> None:
    with pytest.raises(FilterError, match=reason):
        compile_any(patterns)


@pytest.mark.parametrize("patterns", [pytest.param('{"k": ["a"]}', id="one-string"),
                                      pytest.param([5], id="not-a-string")])
def test_refused_types(patterns: Any) -> None:
    with pytest.raises(FilterError, match="string"):
        compile_filters(patterns)


def test_filter_error_is_a_value_error() -> None:
    # The API layer turns ValueError into InvalidParameterValueException, like ScheduleError.
    with pytest.raises(ValueError, match="not valid JSON"):
        compile_filters(["nope"])
