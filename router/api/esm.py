"""Lambda's event source mappings, for SQS queues: CreateEventSourceMapping,
ListEventSourceMappings, GetEventSourceMapping, UpdateEventSourceMapping and
DeleteEventSourceMapping (``/2015-03-31/event-source-mappings/``), with Lambda's shapes, status
codes and errors, enough for boto3 and ``aws lambda … --endpoint-url``.

The constraints of Lambda's service model (botocore's ``data/lambda/2015-03-31/service-2.json``;
https://docs.aws.amazon.com/lambda/latest/api/API_CreateEventSourceMapping.html) are checked first
and refused as AWS's front end refuses them: ``ValidationException``, "1 validation error detected:
Value '0' at 'batchSize' failed to satisfy constraint: …". Lambda's own rules come next, as
``InvalidParameterValueException``: an SQS queue only, the batching rules, a queue that exists with
a visibility timeout no shorter than the function's timeout. A second mapping of one function to
one queue is a ``ResourceConflictException``. A parameter Headwater does not implement is refused
by name unless its value asks for nothing, rather than ignored.

The mappings of config.toml's triggers are listed with the others but are read-only here, as a
config function is. Reading a request into a ``Mapping`` is pure (``read_create``,
``read_update``, ``read_list_query``, ``select``, ``configuration``); the handlers add what needs the
daemon: the function, the queue, the other mappings, persistence and the pollers.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable
from collections.abc import Mapping as Query
from typing import Any

import msgspec
from aiohttp import web

from router.api.body import Refusal
from router.api.management import (
    MAX_SETTINGS_BODY,
    NO_BODY,
    Invalid,
    authenticated,
    latest_name,
    read_json,
    unimplemented,
)
from router.config import (
    BATCH_SIZE,
    BATCH_WINDOW_S,
    MAXIMUM_CONCURRENCY,
    ServerConfig,
    batching_problem,
    function_arn,
)
from router.run.registry import Registry, parse_function_name
from sources.filters import FilterError, compile_filters
from sources.mappings import Mapping, Mappings
from sources.poller import ENDPOINT_ERRORS, describe
from sources.sqs_event import parse_sqs_arn, queue_url_of

# The service model's patterns (Arn, NamespacedFunctionName) and bounds, which Lambda matches
# whole, as Java's String.matches does.
ARN_PATTERN = (r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?"
               r"-[a-z]+-\d{1})?:(\d{12})?:(.*)")
FUNCTION_NAME_PATTERN = (r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?"
                         r"-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)"
                         r"(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?")
ARN_LENGTH = 10000
FUNCTION_NAME_LENGTH = 256
MAX_ITEMS = (1, 10000)
# "ListEventSourceMappings returns a maximum of 100 items in each response, even if you set the
# number higher" (the MaxItems member's documentation).
PAGE = 100
RESPONSE_TYPES = ("ReportBatchItemFailures",)
NOT_FOUND = "The resource you requested does not exist."

_ARN = re.compile(ARN_PATTERN)
_FUNCTION_NAME = re.compile(FUNCTION_NAME_PATTERN)


def _unset(value: Any) -> bool:
    """Whether a parameter's value asks for nothing: absent, empty, false, or all of its parts so.
    (Not 0: ``0 == False`` would pass a ParallelizationFactor of 0 as unset.)"""
    if isinstance(value, dict):
        return all(_unset(v) for v in value.values())
    return value is None or value is False or (isinstance(value, str | list) and not value)


def _default(default: int) -> Callable[[Any], bool]:
    return lambda value: _unset(value) or (not isinstance(value, bool) and value == default)


# What each operation implements (UUID travels in the path).
CREATE_PARAMETERS = {"FunctionName", "EventSourceArn", "Enabled", "BatchSize",
                     "MaximumBatchingWindowInSeconds", "FilterCriteria", "FunctionResponseTypes",
                     "ScalingConfig"}
UPDATE_PARAMETERS = CREATE_PARAMETERS - {"EventSourceArn"}
# The model's other request members, each with the test of a value that asks for nothing (Lambda's
# default): the stream, Kafka, MQ and DocumentDB settings, which Lambda itself refuses for an SQS
# queue, then the SQS ones Headwater lacks. Any other value is refused, naming the parameter.
UNIMPLEMENTED: dict[str, Callable[[Any], bool]] = {
    "StartingPosition": _unset,
    "StartingPositionTimestamp": _unset,
    "ParallelizationFactor": _default(1),
    "DestinationConfig": _unset,
    "MaximumRecordAgeInSeconds": _default(-1),
    "BisectBatchOnFunctionError": _unset,
    "MaximumRetryAttempts": _default(-1),
    "TumblingWindowInSeconds": _default(0),
    "Topics": _unset,
    "Queues": _unset,
    "SourceAccessConfigurations": _unset,
    "SelfManagedEventSource": _unset,
    "AmazonManagedKafkaEventSourceConfig": _unset,
    "SelfManagedKafkaEventSourceConfig": _unset,
    "DocumentDBEventSourceConfig": _unset,
    "KMSKeyArn": _unset,
    "MetricsConfig": _unset,
    "LoggingConfig": _unset,
    "ProvisionedPollerConfig": _unset,
    "Tags": _unset,
}
# batching_problem speaks config.toml's keys; the API names Lambda's parameters.
API_NAMES = {"batch_size": "BatchSize", "batch_window_s": "MaximumBatchingWindowInSeconds"}


# --- errors ------------------------------------------------------------------------------------


def invalid(message: str) -> Refusal:
    return Refusal(400, "InvalidParameterValueException", message)


def not_found() -> Refusal:
    return Refusal(404, "ResourceNotFoundException", NOT_FOUND)


def _shown(value: Any) -> str:
    """A value as AWS's validation messages show it (Java's toString, quoted; null bare)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"'{str(value).lower()}'"
    if isinstance(value, list):
        return "'[" + ", ".join(str(v) for v in value) + "]'"
    return f"'{value}'"


def violation(value: Any, at: str, constraint: str) -> str:
    return f"Value {_shown(value)} at '{at}' failed to satisfy constraint: {constraint}"


def validation_error(violations: list[str]) -> Refusal:
    count = len(violations)
    return Refusal(400, "ValidationException",
                   f"{count} validation error{'s' if count > 1 else ''} detected: "
                   + "; ".join(violations))


# --- reading requests (pure) -------------------------------------------------------------------


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{key}: expected an integer, got {json.dumps(value)}")
    return value


def _in_range(value: int | None, at: str, lo: int, hi: int) -> list[str]:
    if value is not None and value < lo:
        return [violation(value, at, f"Member must have value greater than or equal to {lo}")]
    if value is not None and value > hi:
        return [violation(value, at, f"Member must have value less than or equal to {hi}")]
    return []


def _matching(value: Any, at: str, pattern: re.Pattern[str], length: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str):
        raise invalid(f"{at[0].upper()}{at[1:]}: expected a string, got {json.dumps(value)}")
    out = []
    if len(value) > length:
        out.append(violation(value, at, f"Member must have length less than or equal to {length}"))
    if not pattern.fullmatch(value):
        out.append(violation(value, at, "Member must satisfy regular expression pattern: "
                                        f"{pattern.pattern}"))
    return out


def constraint_violations(body: dict[str, Any], *, create: bool) -> list[str]:
    """What the service model refuses in a Create (or Update) body, in AWS's words."""
    out = []
    if create and body.get("FunctionName") is None:
        out.append(violation(None, "functionName", "Member must not be null"))
    out += _matching(body.get("FunctionName"), "functionName", _FUNCTION_NAME, FUNCTION_NAME_LENGTH)
    if create:
        out += _matching(body.get("EventSourceArn"), "eventSourceArn", _ARN, ARN_LENGTH)
    out += _in_range(_integer(body, "BatchSize"), "batchSize", *BATCH_SIZE)
    out += _in_range(_integer(body, "MaximumBatchingWindowInSeconds"),
                     "maximumBatchingWindowInSeconds", *BATCH_WINDOW_S)
    scaling = body.get("ScalingConfig")
    if isinstance(scaling, dict):
        out += _in_range(_integer(scaling, "MaximumConcurrency"), "scalingConfig.maximumConcurrency",
                         *MAXIMUM_CONCURRENCY)
    types = body.get("FunctionResponseTypes")
    if isinstance(types, list):
        if len(types) > 1:
            out.append(violation(types, "functionResponseTypes",
                                 "Member must have length less than or equal to 1"))
        if any(t not in RESPONSE_TYPES for t in types):
            out.append(violation(types, "functionResponseTypes",
                                 "Member must satisfy constraint: [Member must satisfy enum value "
                                 f"set: [{', '.join(RESPONSE_TYPES)}]]"))
    return out


def refuse_unimplemented(body: dict[str, Any], implemented: set[str]) -> None:
    """Raise naming the parameters of ``body`` Headwater would otherwise ignore."""
    unknown, unsupported = unimplemented(body, implemented, UNIMPLEMENTED)
    if unknown:
        raise invalid(f"Unknown parameter(s): {', '.join(unknown)}")
    if not (_unset(body.get("StartingPosition")) and _unset(body.get("StartingPositionTimestamp"))):
        raise invalid("StartingPosition is not valid for SQS event sources.")  # Lambda's words
    if unsupported:
        raise invalid(f"Not supported by Headwater: {', '.join(unsupported)} (an event source "
                      f"mapping of an SQS queue takes {', '.join(sorted(implemented))})")


def read_filters(criteria: Any) -> list[str]:
    """FilterCriteria's patterns, checked as Lambda checks them. An empty FilterCriteria (no
    Filters) is none: how UpdateEventSourceMapping removes them."""
    if criteria is None:
        return []
    if not isinstance(criteria, dict) or set(criteria) - {"Filters"}:
        raise invalid("FilterCriteria: expected an object with Filters")
    filters = criteria.get("Filters") or []
    if not isinstance(filters, list) or not all(
            isinstance(f, dict) and set(f) <= {"Pattern"} for f in filters):
        raise invalid("FilterCriteria.Filters: expected a list of objects with a Pattern")
    patterns = [f.get("Pattern", "") for f in filters]
    try:
        compile_filters(patterns)
    except FilterError as e:
        raise invalid(f"FilterCriteria: {e}") from None
    return patterns


def lambda_words(problem: str) -> str:
    """batching_problem's "key: why" as the API says it: Lambda's own words (they start with a
    capital) bare, Headwater's after the parameter's API name."""
    key, _, text = problem.partition(": ")
    return text if text[:1].isupper() else f"{API_NAMES.get(key, key)}: {text}"


def apply_settings(body: dict[str, Any], m: Mapping, now: float) -> Mapping:
    """``m`` with the settings of ``body`` that Create and Update share applied, stamped ``now``;
    raises ``Refusal`` if Lambda would refuse the result."""
    changes: dict[str, Any] = {}
    if (batch := _integer(body, "BatchSize")) is not None:
        changes["batch_size"] = batch
    if (window := _integer(body, "MaximumBatchingWindowInSeconds")) is not None:
        changes["window_s"] = window
    if body.get("Enabled") is not None:
        if not isinstance(body["Enabled"], bool):
            raise invalid(f"Enabled: expected true or false, got {json.dumps(body['Enabled'])}")
        changes["enabled"] = body["Enabled"]
    if "FilterCriteria" in body:
        changes["filters"] = read_filters(body["FilterCriteria"])
    if "FunctionResponseTypes" in body:
        types = body["FunctionResponseTypes"] or []
        if not isinstance(types, list):
            raise invalid("FunctionResponseTypes: expected a list")
        changes["report_failures"] = "ReportBatchItemFailures" in types
    if "ScalingConfig" in body:
        # "To remove the configuration, pass an empty value" (ScalingConfig's documentation).
        scaling = body["ScalingConfig"] or {}
        if not isinstance(scaling, dict) or set(scaling) - {"MaximumConcurrency"}:
            raise invalid("ScalingConfig: expected an object with MaximumConcurrency")
        changes["concurrency"] = _integer(scaling, "MaximumConcurrency")
    new = msgspec.structs.replace(m, last_modified=now, **changes)
    if problem := batching_problem(new.batch_size, new.window_s,
                                   new.event_source_arn.endswith(".fifo")):
        raise invalid(lambda_words(problem))
    return new


def read_create(body: dict[str, Any], *, mapping_uuid: str, endpoint_url: str,
                now: float) -> tuple[str, Mapping]:
    """CreateEventSourceMapping's FunctionName (as given) and the mapping it asks for, polling the
    queue at ``endpoint_url`` ("" for SQS's own); raises ``Refusal`` as Lambda would."""
    if violations := constraint_violations(body, create=True):
        raise validation_error(violations)
    refuse_unimplemented(body, CREATE_PARAMETERS)
    arn = body.get("EventSourceArn")
    if not arn:
        raise invalid("Unrecognized event source: Headwater's event source mappings read SQS "
                      "queues, named by EventSourceArn")
    service = arn.split(":")[2]
    if service != "sqs":
        raise invalid(f"Unsupported event source {arn}: Headwater maps Amazon SQS queues only, "
                      f"not {service}")
    try:
        region, _, _ = parse_sqs_arn(arn)
    except ValueError:
        raise invalid(f"EventSourceArn: {arn} is not an SQS queue's ARN "
                      "(arn:aws:sqs:REGION:ACCOUNT:NAME)") from None
    m = Mapping(uuid=mapping_uuid, function="", event_source_arn=arn,
                queue_url=queue_url_of(arn, endpoint_url or None), region=region)
    return body["FunctionName"], apply_settings(body, m, now)


def read_update(body: dict[str, Any], m: Mapping, now: float) -> tuple[str | None, Mapping]:
    """UpdateEventSourceMapping's FunctionName (None to keep the mapping's) and ``m`` updated;
    raises ``Refusal`` as Lambda would."""
    if violations := constraint_violations(body, create=False):
        raise validation_error(violations)
    refuse_unimplemented(body, UPDATE_PARAMETERS)
    return body.get("FunctionName"), apply_settings(body, m, now)


def function_filter(text: str) -> str:
    """The function name a ListEventSourceMappings FunctionName selects. A qualifier other than
    $LATEST selects a version Headwater does not have: the text itself, which names nothing."""
    return latest_name(text) or text


def read_list_query(query: Query[str, str]) -> tuple[str | None, str | None, str, int]:
    """ListEventSourceMappings' function name, EventSourceArn, Marker and page size."""
    function, arn = query.get("FunctionName"), query.get("EventSourceArn")
    violations = _matching(function, "functionName", _FUNCTION_NAME, FUNCTION_NAME_LENGTH)
    violations += _matching(arn, "eventSourceArn", _ARN, ARN_LENGTH)
    size = PAGE
    if "MaxItems" in query:
        try:
            size = int(query["MaxItems"])
        except ValueError:
            raise invalid(f"MaxItems: expected an integer, got {json.dumps(query['MaxItems'])}") \
                from None
        violations += _in_range(size, "maxItems", *MAX_ITEMS)
    if violations:
        raise validation_error(violations)
    return (None if function is None else function_filter(function), arn,
            query.get("Marker", ""), min(size, PAGE))


def select(mappings: Iterable[Mapping], function: str | None, arn: str | None, marker: str,
           size: int) -> tuple[list[Mapping], str | None]:
    """One page of the mappings of ``function`` and ``arn`` (None: any) after ``marker``, and the
    marker of the next page (None at the end). Ordered by UUID, the marker the last one listed, so
    that a mapping created or deleted between two pages moves no other across a page's edge."""
    chosen = sorted((m for m in mappings
                     if (function is None or m.function == function)
                     and (arn is None or m.event_source_arn == arn)
                     and m.uuid > marker), key=lambda m: m.uuid)
    page = chosen[:size]
    return page, page[-1].uuid if len(chosen) > size else None


def configuration(m: Mapping, server: ServerConfig, state: str, last_result: str) -> dict[str, Any]:
    """The mapping as Lambda's EventSourceMappingConfiguration reports an SQS queue's."""
    out: dict[str, Any] = {
        "UUID": m.uuid,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.window_s,
        "EventSourceArn": m.event_source_arn,
    }
    if m.filters:
        out["FilterCriteria"] = {"Filters": [{"Pattern": p} for p in m.filters]}
    out |= {
        "FunctionArn": function_arn(server, m.function),
        "LastModified": round(m.last_modified, 3),  # epoch seconds, a number, as Lambda's
        "LastProcessingResult": last_result,
        "State": state,
        "StateTransitionReason": "USER_INITIATED",
        "FunctionResponseTypes": ["ReportBatchItemFailures"] if m.report_failures else [],
    }
    if m.concurrency is not None:
        out["ScalingConfig"] = {"MaximumConcurrency": m.concurrency}
    out["EventSourceMappingArn"] = (f"arn:aws:lambda:{server.region}:{server.account_id}:"
                                    f"event-source-mapping:{m.uuid}")
    return out


def duplicate_of(mappings: Iterable[Mapping], m: Mapping) -> Mapping | None:
    """Another mapping of ``m``'s function to ``m``'s queue: Lambda allows one."""
    return next((other for other in mappings if other.uuid != m.uuid
                 and other.function == m.function
                 and other.event_source_arn == m.event_source_arn), None)


# --- the daemon's side -------------------------------------------------------------------------

def parse_body(body: bytes) -> dict[str, Any]:
    try:
        return read_json(body)
    except Invalid as e:
        raise invalid(str(e)) from None


def function_named(registry: Registry, text: str) -> str:
    """The deployed function a FunctionName names; a 404 ``Refusal`` if none."""
    parsed = parse_function_name(text)
    if parsed is None or parsed[1] not in (None, "$LATEST") or parsed[0] not in registry.deployed:
        name = parsed[0] if parsed is not None else text
        raise Refusal(404, "ResourceNotFoundException",
                      f"Function not found: {function_arn(registry.config.server, name)}")
    return parsed[0]


def existing(mappings: Mappings, mapping_uuid: str) -> Mapping:
    """The API-made mapping ``mapping_uuid``, to change; a ``Refusal`` if it is none."""
    m = mappings.mappings.get(mapping_uuid)
    if m is None:
        raise not_found()
    if m.from_config:
        raise invalid(f"The event source mapping {m.uuid} is a trigger of function {m.function} "
                      "defined in config.toml: it is read-only through the API; change "
                      "config.toml instead")
    return m


def refuse_duplicate(mappings: Mappings, m: Mapping) -> None:
    if (other := duplicate_of(mappings.mappings.values(), m)) is not None:
        # Lambda's words, spaces inside the quotes included.
        raise Refusal(409, "ResourceConflictException",
                      f'An event source mapping with SQS arn (" {m.event_source_arn} ") and '
                      f'function (" {m.function} ") already exists. Please update or delete the '
                      f"existing mapping with UUID {other.uuid}")


async def check_queue(mappings: Mappings, m: Mapping) -> None:
    """Refuse a queue that cannot serve the function, as Lambda does at creation. A queue that
    cannot be asked is refused too: a mapping accepted unchecked would fail only later, in a log."""
    try:
        problem = await mappings.problem(m)
    except ENDPOINT_ERRORS as e:
        raise invalid(f"The queue {m.event_source_arn} could not be checked: {describe(e)}") \
            from None
    if problem:
        raise invalid(problem)


def persist(mappings: Mappings, undo: Callable[[], object]) -> None:
    """Save the mappings; if they cannot be, undo the change and say so."""
    try:
        mappings.save()
    except OSError as e:
        undo()
        raise Refusal(500, "ServiceException",
                      f"The event source mappings could not be stored: {e}") from None


def answer(registry: Registry, m: Mapping, state: str, status: int) -> web.Response:
    body = configuration(m, registry.config.server, state, registry.mappings.last_result(m))
    return web.json_response(body, status=status)


@authenticated(MAX_SETTINGS_BODY, "CreateEventSourceMapping")
async def create_mapping(request: web.BaseRequest, registry: Registry, _: str,
                         body: bytes) -> web.Response:
    mappings = registry.mappings
    try:
        payload = parse_body(body)
        text, m = read_create(payload, mapping_uuid=str(uuid.uuid4()),
                              endpoint_url=mappings.clients.where("", "")[0], now=time.time())
        m = msgspec.structs.replace(m, function=function_named(registry, text))
        async with mappings.writing:
            refuse_duplicate(mappings, m)
            await check_queue(mappings, m)
            function_named(registry, m.function)  # not deleted while the queue was asked
            mappings.mappings[m.uuid] = m
            persist(mappings, lambda: mappings.mappings.pop(m.uuid))
            if m.enabled:
                mappings.run(m)
    except Refusal as e:
        return e.response()
    return answer(registry, m, "Creating", 202)


@authenticated(NO_BODY, "ListEventSourceMappings")
async def list_mappings(request: web.BaseRequest, registry: Registry, _: str,
                        body: bytes) -> web.Response:
    mappings = registry.mappings
    try:
        function, arn, marker, size = read_list_query(request.query)
    except Refusal as e:
        return e.response()
    page, next_marker = select(mappings.mappings.values(), function, arn, marker, size)
    server = registry.config.server
    listing: dict[str, Any] = {"EventSourceMappings": [
        configuration(m, server, mappings.state(m), mappings.last_result(m)) for m in page]}
    if next_marker is not None:
        listing["NextMarker"] = next_marker
    return web.json_response(listing)


@authenticated(NO_BODY, "GetEventSourceMapping")
async def get_mapping(request: web.BaseRequest, registry: Registry, mapping_uuid: str,
                      body: bytes) -> web.Response:
    m = registry.mappings.mappings.get(mapping_uuid)
    if m is None:
        return not_found().response()
    return answer(registry, m, registry.mappings.state(m), 200)


@authenticated(MAX_SETTINGS_BODY, "UpdateEventSourceMapping")
async def update_mapping(request: web.BaseRequest, registry: Registry, mapping_uuid: str,
                         body: bytes) -> web.Response:
    mappings = registry.mappings
    try:
        payload = parse_body(body)
        async with mappings.writing:
            m = existing(mappings, mapping_uuid)
            text, new = read_update(payload, m, time.time())
            if text is not None:
                new = msgspec.structs.replace(new, function=function_named(registry, text))
            if new.function != m.function:
                refuse_duplicate(mappings, new)
                await check_queue(mappings, new)
            mappings.mappings[m.uuid] = new
            persist(mappings, lambda: mappings.mappings.__setitem__(m.uuid, m))
            # Its pollers hold the old settings: stopped (a batch under way finishes), then
            # started again with the new ones.
            await mappings.halt(m)
            if new.enabled:
                mappings.run(new)
    except Refusal as e:
        return e.response()
    return answer(registry, new, "Updating", 202)


@authenticated(NO_BODY, "DeleteEventSourceMapping")
async def delete_mapping(request: web.BaseRequest, registry: Registry, mapping_uuid: str,
                         body: bytes) -> web.Response:
    mappings = registry.mappings
    try:
        async with mappings.writing:
            m = existing(mappings, mapping_uuid)
            del mappings.mappings[m.uuid]
            persist(mappings, lambda: mappings.mappings.__setitem__(m.uuid, m))
            response = answer(registry, m, "Deleting", 202)  # with its pollers' last result
            await mappings.halt(m)
    except Refusal as e:
        return e.response()
    return response
