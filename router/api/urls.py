"""Lambda's function URL configs: CreateFunctionUrlConfig, GetFunctionUrlConfig,
UpdateFunctionUrlConfig, DeleteFunctionUrlConfig and ListFunctionUrlConfigs (``/2021-10-31/``).

A function deployed through the API has no URL until CreateFunctionUrlConfig makes one; its
``AuthType`` is ``NONE`` (anyone) or ``AWS_IAM`` (SigV4 with one of the daemon's access keys). A
function from config.toml has the URL its ``url`` table says, reported here but changed only there.
``Cors`` is validated and stored, and served by the URL (``router.api.cors``); ``InvokeMode`` is
``BUFFERED`` (the default) or ``RESPONSE_STREAM`` (``sources.http_stream``).
"""

from __future__ import annotations

import json
import typing
from typing import Any

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.management import (
    MAX_SETTINGS_BODY,
    NO_BODY,
    Invalid,
    changed,
    paged,
    read_json,
    readable,
    writable,
)
from router.config import Cors, FunctionUrl, InvokeMode, effective_auth, function_arn
from router.run.registry import Registry
from router.store.store import Deployed, now_text

AUTH_TYPES = {"NONE": "none", "AWS_IAM": "aws_iam"}
# How a URL's auth is reported: "token" (a bearer token) is Headwater's own, from config.toml, and
# "api" (the daemon's credentials, either kind) is what AWS_IAM means to a caller with an access key.
REPORTED = {"none": "NONE", "aws_iam": "AWS_IAM", "api": "AWS_IAM", "token": "TOKEN"}
URL_PARAMETERS = {"AuthType", "Cors", "InvokeMode"}
INVOKE_MODES = typing.get_args(InvokeMode)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


CORS_KEYS = {_pascal(field): field for field in Cors.__struct_fields__}


def cors_of(value: Any) -> Cors | None:
    """Lambda's Cors object as Headwater's ``Cors``; ``Invalid`` naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("Cors: expected an object")
    unknown = sorted(set(value) - set(CORS_KEYS))
    if unknown:
        raise Invalid(f"Cors: unknown key(s) {', '.join(unknown)}")
    try:
        return msgspec.convert({CORS_KEYS[k]: v for k, v in value.items()}, Cors)
    except msgspec.ValidationError as e:
        raise Invalid(f"Cors: {e}") from None


def url_settings(registry: Registry, current: FunctionUrl, body: dict[str, Any],
                 creating: bool) -> FunctionUrl:
    """``current`` with a Create/UpdateFunctionUrlConfig body applied; ``Invalid`` if bad."""
    unknown = sorted(set(body) - URL_PARAMETERS)
    if unknown:
        raise Invalid(f"Unknown parameter(s): {', '.join(unknown)}")
    changes: dict[str, Any] = {"enabled": True}
    if "InvokeMode" in body:
        if body["InvokeMode"] not in INVOKE_MODES:
            raise Invalid(f"InvokeMode: expected BUFFERED or RESPONSE_STREAM, got "
                          f"{json.dumps(body['InvokeMode'])}")
        changes["invoke_mode"] = body["InvokeMode"]
    if "AuthType" in body or creating:
        auth = AUTH_TYPES.get(body.get("AuthType"))  # type: ignore[arg-type]
        if auth is None:
            raise Invalid(f"AuthType: expected NONE or AWS_IAM, got {json.dumps(body.get('AuthType'))}")
        if auth == "aws_iam" and not registry.config.server.access_keys:
            raise Invalid("AuthType: AWS_IAM needs access keys in the daemon's [server].access_keys")
        changes["auth"] = auth
    if "Cors" in body:
        changes["cors"] = cors_of(body["Cors"])
    return msgspec.structs.replace(current, **changes)


def url_config(request: web.BaseRequest, registry: Registry, deployed: Deployed) -> dict[str, Any]:
    fn = deployed.function
    config: dict[str, Any] = {
        "FunctionUrl": f"{request.scheme}://{request.host}/urls/{fn.name}/",
        "FunctionArn": function_arn(registry.config.server, fn.name),
        "AuthType": REPORTED[effective_auth(fn.url.auth, registry.config.server)],
        "CreationTime": deployed.url_created or deployed.last_modified,
        "LastModifiedTime": deployed.url_modified or deployed.last_modified,
        "InvokeMode": fn.url.invoke_mode,
    }
    if fn.url.cors is not None:
        config["Cors"] = {_pascal(k): v for k, v in msgspec.structs.asdict(fn.url.cors).items()}
    return config


def config_url(registry: Registry, name: str) -> web.Response | None:
    """A function of config.toml keeps the URL its file gives it, api_writable or not: the
    file's ``url`` wins at every start, so an API change would not last."""
    if any(f.name == name for f in registry.config.functions):
        return aws_error(409, "ResourceConflictException",
                         f"The function URL of {name} is set by the daemon's configuration file")
    return None


def qualified(request: web.BaseRequest, registry: Registry, name: str) -> web.Response | None:
    """Function URLs of versions and aliases do not exist here: only the unqualified one."""
    qualifier = request.query.get("Qualifier")
    if qualifier not in (None, "$LATEST"):
        return aws_error(404, "ResourceNotFoundException",
                         f"Function not found: {function_arn(registry.config.server, name)}:{qualifier}")
    return None


def no_url(registry: Registry, name: str) -> web.Response:
    return aws_error(404, "ResourceNotFoundException",
                     f"The resource you requested does not exist: function URL of "
                     f"{function_arn(registry.config.server, name)}")


async def _write(request: web.BaseRequest, body: bytes, registry: Registry, deployed: Deployed,
                 creating: bool) -> web.Response:
    name = deployed.function.name
    if (refused := qualified(request, registry, name) or config_url(registry, name)) is not None:
        return refused
    exists = deployed.function.url.enabled
    if creating and exists:
        return aws_error(409, "ResourceConflictException",
                         f"Failed to create function url config for [functionArn = "
                         f"{function_arn(registry.config.server, name)}]. Error message:  "
                         "FunctionUrlConfig exists for this Lambda function")
    if not creating and not exists:
        return no_url(registry, name)
    url = url_settings(registry, deployed.function.url, read_json(body), creating)
    now = now_text()
    deployed.function = msgspec.structs.replace(deployed.function, url=url)
    deployed.url_modified = now
    if creating:
        deployed.url_created = now
    changed(registry, deployed)
    return web.json_response(url_config(request, registry, deployed), status=201 if creating else 200)


@writable(MAX_SETTINGS_BODY, "CreateFunctionUrlConfig")
async def create_url(request: web.BaseRequest, body: bytes, registry: Registry,
                     deployed: Deployed) -> web.Response:
    return await _write(request, body, registry, deployed, creating=True)


@writable(MAX_SETTINGS_BODY, "UpdateFunctionUrlConfig")
async def update_url(request: web.BaseRequest, body: bytes, registry: Registry,
                     deployed: Deployed) -> web.Response:
    return await _write(request, body, registry, deployed, creating=False)


@writable(NO_BODY, "DeleteFunctionUrlConfig")
async def delete_url(request: web.BaseRequest, body: bytes, registry: Registry,
                     deployed: Deployed) -> web.Response:
    name = deployed.function.name
    if (refused := qualified(request, registry, name) or config_url(registry, name)) is not None:
        return refused
    if not deployed.function.url.enabled:
        return no_url(registry, name)
    deployed.function = msgspec.structs.replace(deployed.function, url=FunctionUrl(enabled=False))
    deployed.url_created = deployed.url_modified = ""
    changed(registry, deployed)
    return web.Response(status=204)


@readable("GetFunctionUrlConfig")
async def get_url(request: web.BaseRequest, body: bytes, registry: Registry,
                  deployed: Deployed) -> web.Response:
    name = deployed.function.name
    if (refused := qualified(request, registry, name)) is not None:
        return refused
    if not deployed.function.url.enabled:
        return no_url(registry, name)
    return web.json_response(url_config(request, registry, deployed))


@readable("ListFunctionUrlConfigs")
async def list_urls(request: web.BaseRequest, body: bytes, registry: Registry,
                    deployed: Deployed) -> web.Response:
    configs = [url_config(request, registry, deployed)] if deployed.function.url.enabled else []
    return paged(request, "FunctionUrlConfigs", configs)

