"""Lambda's EventInvokeConfig operations: a function's asynchronous invocation settings.

``/2019-09-25/functions/{name}/event-invoke-config``: PUT (Put: every setting, the ones left out
back to their defaults), POST (Update: only those given), GET, DELETE (back to the defaults);
``…/event-invoke-config/list`` lists the one configuration a function has ($LATEST). A function
whose settings are all the defaults has none, as Lambda answers. Settings change without
restarting the function's workers: the async runner reads them at each event.

A destination is an ARN, as Lambda takes it (a function's, an SQS queue's), or Headwater's own
``"dlq"``, the dead-letter store, which is also the default ``OnFailure``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.management import (
    NO_BODY,
    Invalid,
    read_json,
    readable,
    refuse_unimplemented,
    writable,
)
from router.config import AsyncInvoke, function_arn
from router.run.registry import Registry
from router.store.store import Deployed, stamp

FIELDS = {"MaximumRetryAttempts": "max_retry_attempts",
          "MaximumEventAgeInSeconds": "max_event_age_s"}
PARAMETERS = {*FIELDS, "DestinationConfig"}
MAX_BODY = 64 * 1024


def last_modified(deployed: Deployed) -> float:
    """Lambda's LastModified of an EventInvokeConfig: epoch seconds."""
    try:
        return datetime.strptime(deployed.last_modified, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return 0.0


def latest_arn(registry: Registry, deployed: Deployed) -> str:
    return f"{function_arn(registry.config.server, deployed.function.name)}:$LATEST"


def shape(registry: Registry, deployed: Deployed) -> dict[str, Any]:
    settings = deployed.function.async_
    destinations: dict[str, Any] = {}
    if settings.on_success:
        destinations["OnSuccess"] = {"Destination": settings.on_success}
    if settings.on_failure:
        destinations["OnFailure"] = {"Destination": settings.on_failure}
    return {"LastModified": last_modified(deployed),
            "FunctionArn": latest_arn(registry, deployed),
            "MaximumRetryAttempts": settings.max_retry_attempts,
            "MaximumEventAgeInSeconds": settings.max_event_age_s,
            "DestinationConfig": destinations}


def apply(current: AsyncInvoke, payload: dict[str, Any]) -> AsyncInvoke:
    """``payload``'s settings over ``current``; raises ``Invalid`` with Lambda's kind of reason."""
    refuse_unimplemented(payload, PARAMETERS)
    changes: dict[str, Any] = {FIELDS[k]: v for k, v in payload.items() if k in FIELDS}
    destinations = payload.get("DestinationConfig", {})
    if not isinstance(destinations, dict) or set(destinations) - {"OnSuccess", "OnFailure"}:
        raise Invalid("DestinationConfig: expected OnSuccess and/or OnFailure")
    for key, field in (("OnSuccess", "on_success"), ("OnFailure", "on_failure")):
        if key in destinations:
            value = destinations[key]
            if not isinstance(value, dict) or set(value) - {"Destination"}:
                raise Invalid(f"DestinationConfig.{key}: expected {{\"Destination\": ARN}}")
            changes[field] = value.get("Destination", "")
    try:
        settings = msgspec.convert({**msgspec.to_builtins(current), **changes}, AsyncInvoke)
    except msgspec.ValidationError as e:
        path = str(e).rpartition("at `$.")[2].rstrip("`")
        names = {v: k for k, v in FIELDS.items()} | {"on_success": "DestinationConfig.OnSuccess",
                                                     "on_failure": "DestinationConfig.OnFailure"}
        raise Invalid(f"{names.get(path, path)}: {str(e).partition(' - at')[0]}") from None
    if settings.on_success == "dlq":
        raise Invalid('DestinationConfig.OnSuccess: "dlq" keeps failures; a success goes to a '
                      "function or a queue")
    return settings


def qualifier_problem(request: web.BaseRequest) -> web.Response | None:
    qualifier = request.query.get("Qualifier")
    if qualifier not in (None, "$LATEST"):
        return aws_error(404, "ResourceNotFoundException",
                         f"Function version {qualifier} not found (Headwater has $LATEST only)")
    return None


def save(registry: Registry, deployed: Deployed, settings: AsyncInvoke) -> web.Response:
    deployed.function = msgspec.structs.replace(deployed.function, async_=settings)
    registry.store.save(stamp(deployed))
    return web.json_response(shape(registry, deployed))


def _write(replace: bool) -> Any:
    async def handler(request: web.BaseRequest, body: bytes, registry: Registry,
                      deployed: Deployed) -> web.Response:
        if (problem := qualifier_problem(request)) is not None:
            return problem
        base = AsyncInvoke() if replace else deployed.function.async_
        settings = apply(base, read_json(body))
        return save(registry, deployed, settings)
    return handler


put_config = writable(MAX_BODY, "PutFunctionEventInvokeConfig")(_write(replace=True))
update_config = writable(MAX_BODY, "UpdateFunctionEventInvokeConfig")(_write(replace=False))


def configured(deployed: Deployed) -> bool:
    """Whether the function has an EventInvokeConfig: settings other than the defaults."""
    return deployed.function.async_ != AsyncInvoke()


def unconfigured(request: web.BaseRequest, registry: Registry,
                 deployed: Deployed) -> web.Response | None:
    """The 404 of a Get or Delete that finds no EventInvokeConfig, if it finds none."""
    if (problem := qualifier_problem(request)) is not None:
        return problem
    if not configured(deployed):
        return aws_error(404, "ResourceNotFoundException", f"The function "
                         f"{latest_arn(registry, deployed)} doesn't have an EventInvokeConfig")
    return None


@writable(NO_BODY, "DeleteFunctionEventInvokeConfig")
async def delete_config(request: web.BaseRequest, body: bytes, registry: Registry,
                        deployed: Deployed) -> web.Response:
    if (refused := unconfigured(request, registry, deployed)) is not None:
        return refused
    save(registry, deployed, AsyncInvoke())
    return web.Response(status=204)


@readable("GetFunctionEventInvokeConfig")
async def get_config(request: web.BaseRequest, body: bytes, registry: Registry,
                     deployed: Deployed) -> web.Response:
    if (refused := unconfigured(request, registry, deployed)) is not None:
        return refused
    return web.json_response(shape(registry, deployed))


@readable("ListFunctionEventInvokeConfigs")
async def list_configs(request: web.BaseRequest, body: bytes, registry: Registry,
                       deployed: Deployed) -> web.Response:
    return web.json_response({"FunctionEventInvokeConfigs": [shape(registry, deployed)]
                              if configured(deployed) else []})
