"""Event filtering for SQS event source mappings: ``FilterCriteria.Filters[].Pattern`` as Lambda
applies it to each message before a batch is built. Pure: no I/O.

``compile_filters(patterns)`` checks the pattern strings as CreateEventSourceMapping does and
returns a ``Filters``, or raises ``FilterError`` whose message is the InvalidParameterValueException
text. ``Filters.matches(record)`` takes one record exactly as the function would receive it. A
message that matches no filter is deleted by the poller without an invocation, so a pattern that
wrongly fails costs data; that is why every rule below follows a documented fact rather than a
convenient guess.

Lambda says it uses EventBridge's pattern syntax and rules
(https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html#filtering-syntax);
the EventBridge pages that rule set comes from are
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns.html and
https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-event-patterns-content-based-filtering.html.
From them:

- filters are ORed; keys within a pattern are ANDed; the values of a leaf array are ORed; an event
  array matches when any element does;
- an event must contain every field a pattern names, except under ``{"exists": false}``, and exists
  matching looks at leaves only: an object where the pattern expects a leaf counts as absent;
- exact numbers compare by their JSON text (300, 300.0 and 3.0e2 are three different values); only
  ``numeric`` compares by value, and only against JSON numbers, never numeric-looking strings;
- ``null`` and ``""`` are distinct, and neither matches a missing field;
- a key given twice in a pattern keeps its last value.

The SQS body (https://docs.aws.amazon.com/lambda/latest/dg/invocation-eventfiltering.html#filtering-sqs):
an object pattern under ``body`` needs a JSON body and a leaf array under ``body`` needs a plain
string; on a mismatch Lambda drops the message. The docs do not define "valid JSON"; here it is a body
that parses to an object or an array, so a plain-text queue whose bodies happen to read ``42`` or
``true`` is still matched as text.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

MAX_FILTERS = 5  # Lambda's default quota per event source mapping (raisable to 10 on request)
MAX_PATTERN_LENGTH = 4096  # API_Filter: Pattern, maximum length

Matcher = Callable[[Any], bool]  # the value at one path of the record (or _ABSENT) → matched?
LeafTest = Callable[[Any], bool]  # one scalar of the record → matched?


class FilterError(ValueError):
    """A pattern Lambda refuses; the message is the reason the API returns."""


class _Absent:
    """The value at a path the record does not have (distinct from JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


_ABSENT: Any = _Absent()


class _Number(float):
    """A JSON number that remembers how it was written: exact matching compares the text, as
    EventBridge does, while ``numeric`` compares the value."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> _Number:
        number = super().__new__(cls, text)
        number.text = text
        return number


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON (and so Lambda) does not.
    raise ValueError(f"{name} is not JSON")


def _loads(text: str) -> Any:
    return json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_refuse_constant)


_NULL, _TRUE, _FALSE = ("null",), ("true",), ("false",)


def _exact_key(value: Any) -> Any:
    """What exact matching compares: strings as themselves, everything else as a tagged tuple, so
    that "5" and 5, or true and 1, never meet (Python would call True == 1)."""
    if isinstance(value, str):
        return value
    if value is None:
        return _NULL
    if value is True:
        return _TRUE
    if value is False:
        return _FALSE
    if isinstance(value, _Number):
        return ("#", value.text)
    if isinstance(value, int | float):  # a record built in Python rather than parsed from JSON
        return ("#", json.dumps(value))
    return None  # nothing in a pattern has this key


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    """A pattern value as its author wrote it, for error messages."""
    return value.text if isinstance(value, _Number) else json.dumps(value)


# --- compiling one leaf array ------------------------------------------------------------------------

_COMPARE = {"=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def _numeric(path: str, spec: Any) -> LeafTest:
    bad = FilterError(f"{path}: numeric takes [op, number] or [>|>=, number, <|<=, number]")
    if not isinstance(spec, list) or len(spec) not in (2, 4):
        raise bad
    ops, bounds = spec[0::2], spec[1::2]
    if any(op not in _COMPARE for op in ops) or not all(_is_number(b) for b in bounds):
        raise bad
    if len(spec) == 4:
        (low_op, high_op), (low, high) = ops, bounds
        if low_op not in (">", ">=") or high_op not in ("<", "<="):
            raise bad
        if low > high or (low == high and (low_op, high_op) != (">=", "<=")):
            raise FilterError(f"{path}: numeric range {_show(low)} to {_show(high)} is empty")
    checks = tuple((_COMPARE[op], float(b)) for op, b in zip(ops, bounds, strict=True))

    def test(leaf: Any) -> bool:
        if not _is_number(leaf):
            return False
        x = float(leaf)
        return all(compare(x, bound) for compare, bound in checks)

    return test


def _string_arg(path: str, name: str, arg: Any) -> str:
    if not isinstance(arg, str):
        raise FilterError(f"{path}: {name} takes a string")
    return arg


def _anything_but(path: str, spec: Any) -> LeafTest:
    # EventBridge: a string, a number, a list of only strings or only numbers, or one prefix/suffix.
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in ("prefix", "suffix"):
            raise FilterError(f"{path}: anything-but takes a value, a list, or one prefix or suffix")
        (name, arg), = spec.items()
        affix = _string_arg(path, f"anything-but {name}", arg)
        if name == "prefix":
            return lambda leaf: not (isinstance(leaf, str) and leaf.startswith(affix))
        return lambda leaf: not (isinstance(leaf, str) and leaf.endswith(affix))
    values = spec if isinstance(spec, list) else [spec]
    if not values or not (all(isinstance(v, str) for v in values) or all(_is_number(v) for v in values)):
        raise FilterError(f"{path}: anything-but takes strings only or numbers only")
    refused = frozenset(_exact_key(v) for v in values)
    return lambda leaf: _exact_key(leaf) not in refused


def _operator(path: str, rule: dict[str, Any]) -> LeafTest | bool:
    """One ``{operator: argument}`` element; ``exists`` compiles to the bool it asks for."""
    if len(rule) != 1:
        raise FilterError(f"{path}: an operator object takes exactly one operator, got {len(rule)}")
    (name, arg), = rule.items()
    if name == "exists":
        if not isinstance(arg, bool):
            raise FilterError(f"{path}: exists takes true or false")
        return arg
    if name == "prefix":
        prefix = _string_arg(path, name, arg)
        return lambda leaf: isinstance(leaf, str) and leaf.startswith(prefix)
    if name == "suffix":
        suffix = _string_arg(path, name, arg)
        return lambda leaf: isinstance(leaf, str) and leaf.endswith(suffix)
    if name == "equals-ignore-case":
        folded = _string_arg(path, name, arg).lower()
        return lambda leaf: isinstance(leaf, str) and leaf.lower() == folded
    if name == "anything-but":
        return _anything_but(path, arg)
    if name == "numeric":
        return _numeric(path, arg)
    # wildcard, cidr and the rest are EventBridge operators Lambda's filtering page does not list.
    raise FilterError(f"{path}: unknown operator {name!r}")


def _leaves(value: Any) -> list[Any]:
    """The scalars at a path: arrays flatten (any element may match), objects are not leaves."""
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if isinstance(item, list):
                out.extend(_leaves(item))
            elif not isinstance(item, dict):
                out.append(item)
        return out
    if value is _ABSENT or isinstance(value, dict):
        return []
    return [value]


def _compile_leaf(path: str, rules: list[Any]) -> Matcher:
    if not rules:
        raise FilterError(f"{path}: the array is empty")
    exact: set[Any] = set()
    tests: list[LeafTest] = []
    if_present = if_absent = False
    for rule in rules:
        if isinstance(rule, dict):
            compiled = _operator(path, rule)
            if compiled is True:
                if_present = True
            elif compiled is False:
                if_absent = True
            else:
                tests.append(compiled)
        elif isinstance(rule, list):
            raise FilterError(f"{path}: arrays cannot be nested")
        else:
            exact.add(_exact_key(rule))
    frozen, tests_ = frozenset(exact), tuple(tests)

    def match(value: Any) -> bool:
        leaves = _leaves(value)
        if not leaves:
            return if_absent
        for leaf in leaves:
            if _exact_key(leaf) in frozen:
                return True
            for test in tests_:
                if test(leaf):
                    return True
        return if_present

    return match


# --- compiling objects ----------------------------------------------------------------------------

def _compile_value(path: str, value: Any) -> Matcher:
    if isinstance(value, dict):
        return _compile_object(path, value)
    if isinstance(value, list):
        return _compile_leaf(path, value)
    raise FilterError(f"{path}: must be an array or an object, got {_show(value)}")


def _compile_object(path: str, pattern: dict[str, Any]) -> Matcher:
    if not pattern:
        raise FilterError(f"{path or 'pattern'}: empty objects are not allowed")
    for key in pattern:
        if key.startswith("$"):
            # $or is EventBridge's; Lambda's filtering page does not list it, so refuse it rather
            # than read "$or" as a field name that no record has.
            raise FilterError(f"{path + '.' if path else ''}{key}: not supported in Lambda event filtering")
    fields = tuple((key, _compile_value(f"{path}.{key}" if path else key, value))
                   for key, value in pattern.items())
    return _object_matcher(fields)


def _object_matcher(fields: tuple[tuple[str, Matcher], ...]) -> Matcher:
    # What the fields say about a path that is missing, a scalar, or an array without objects: every
    # field beneath it is absent. It does not depend on the record, so it is worked out once here.
    when_absent = all(child(_ABSENT) for _, child in fields)

    def match(value: Any) -> bool:
        if isinstance(value, dict):
            return all(child(value.get(key, _ABSENT)) for key, child in fields)
        if isinstance(value, list):
            # Each object of an array is tried whole, so two fields cannot be satisfied by two
            # different elements (EventBridge's array consistency).
            objects = [item for item in value if isinstance(item, dict)]
            if objects:
                return any(match(item) for item in objects)
        return when_absent

    return match


def _always(_: Any) -> bool:
    return True


# --- one filter, and the set of them --------------------------------------------------------------

_NOT_JSON: Any = object()  # the body is a plain string


def _parse_body(body: Any) -> Any:
    """The body as JSON, or _NOT_JSON. Parsed at most once per record whatever the filter count."""
    if isinstance(body, str):
        start = body.lstrip()[:1]
        if start not in ("{", "["):  # skips the parse for the plain-text queues that are common
            return _NOT_JSON
        try:
            return _loads(body)
        except ValueError:
            return _NOT_JSON
    if isinstance(body, dict | list) or body is _ABSENT:
        return body
    return _NOT_JSON


class _Filter:
    __slots__ = ("body", "body_is_json", "rest")

    def __init__(self, pattern: dict[str, Any]) -> None:
        rest = {key: value for key, value in pattern.items() if key != "body"}
        self.rest: Matcher = _compile_object("", rest) if rest else _always
        self.body: Matcher | None = None
        self.body_is_json = False
        if "body" in pattern:
            self.body = _compile_value("body", pattern["body"])
            self.body_is_json = isinstance(pattern["body"], dict)


class Filters:
    """Compiled FilterCriteria: build once per event source mapping, call ``matches`` per message."""

    __slots__ = ("_filters", "_needs_body", "patterns")

    def __init__(self, patterns: tuple[str, ...], filters: tuple[_Filter, ...]) -> None:
        self.patterns = patterns  # as given, for GetEventSourceMapping to report back
        self._filters = filters
        self._needs_body = any(f.body is not None for f in filters)

    def __len__(self) -> int:
        return len(self._filters)

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Whether Lambda would deliver this record; no filters delivers everything."""
        if not self._filters:
            return True
        body = _parse_body(record.get("body", _ABSENT)) if self._needs_body else _ABSENT
        for f in self._filters:
            if f.body is not None:
                # Lambda compares the formats first and drops the record on a mismatch.
                if body is _NOT_JSON:
                    if f.body_is_json or not f.body(record["body"]):
                        continue
                elif (body is not _ABSENT and not f.body_is_json) or not f.body(body):
                    continue
            if f.rest(record):
                return True
        return False


def compile_filters(patterns: Sequence[str]) -> Filters:
    """Check ``FilterCriteria.Filters[].Pattern`` strings and compile them, or raise FilterError."""
    if isinstance(patterns, str):
        raise FilterError("Filters must be a list of patterns, not one string")
    if len(patterns) > MAX_FILTERS:
        raise FilterError(f"{len(patterns)} filters exceed the limit of {MAX_FILTERS} per event source")
    compiled = []
    for i, text in enumerate(patterns):
        where = f"Filters[{i}].Pattern"
        if not isinstance(text, str):
            raise FilterError(f"{where}: must be a string")
        if len(text) > MAX_PATTERN_LENGTH:
            raise FilterError(f"{where}: {len(text)} characters exceed the limit of {MAX_PATTERN_LENGTH}")
        try:
            pattern = _loads(text)
        except ValueError as e:
            raise FilterError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(pattern, dict):
            raise FilterError(f"{where}: must be a JSON object")
        if not pattern:
            raise FilterError(f"{where}: empty objects are not allowed")
        try:
            compiled.append(_Filter(pattern))
        except FilterError as e:
            raise FilterError(f"{where}: {e}") from None
    return Filters(tuple(patterns), tuple(compiled))
