"""The Lambda management API, enough for boto3 and the AWS CLI with ``--endpoint-url``:
CreateFunction, UpdateFunctionCode, UpdateFunctionConfiguration, GetFunction,
GetFunctionConfiguration, ListFunctions and DeleteFunction, with Lambda's status codes and error
shapes. Functions from config.toml are listed too, read-only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from router import archive
from router.awserror import aws_error
from router.body import api_body
from router.config import (
    EPHEMERAL_MB,
    HANDLER_PATTERN,
    MEMORY_MB,
    NAME_PATTERN,
    RUNTIME_PATTERN,
    TIMEOUT_S,
    FunctionConfig,
    function_arn,
)
from router.registry import Handler, Registry, parse_function_name
from router.store import Deployed, stamp
from workers.runtime import BadRuntime, probe

# A base64 zip of Lambda's 50 MB limit, in a JSON body.
MAX_API_BODY = archive.MAX_ZIPPED * 4 // 3 + 64 * 1024
PAGE = 50  # ListFunctions' largest page, as Lambda's


class Invalid(Exception):
    """A request value Lambda would refuse with InvalidParameterValueException."""


def bad_request(message: str) -> web.Response:
    return aws_error(400, "InvalidParameterValueException", message)


def not_found(registry: Registry, name: str) -> web.Response:
    return aws_error(404, "ResourceNotFoundException",
                     f"Function not found: {function_arn(registry.config.server, name)}")


def read_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        raise Invalid("The request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Invalid("The request body must be a JSON object")
    return value


def configuration(registry: Registry, deployed: Deployed) -> dict[str, Any]:
    fn = deployed.function
    return {
        "FunctionName": fn.name,
        "FunctionArn": function_arn(registry.config.server, fn.name),
        "Runtime": fn.runtime,
        "Role": deployed.role,
        "Handler": fn.handler,
        "CodeSize": deployed.code_size,
        "Description": deployed.description,
        "Timeout": fn.timeout_s,
        "MemorySize": fn.memory_mb,
        "EphemeralStorage": {"Size": fn.ephemeral_storage_mb},
        "LastModified": deployed.last_modified,
        "CodeSha256": deployed.code_sha256,
        "Version": "$LATEST",
        "Environment": {"Variables": dict(fn.env)},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": deployed.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
    }


def _int(body: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{key}: expected an integer from {lo} to {hi}, got {json.dumps(value)}")
    return value


def apply_settings(fn: FunctionConfig, body: dict[str, Any]) -> FunctionConfig:
    """FunctionConfig with the Lambda API's settings in ``body`` applied; ``Invalid`` if bad."""
    changes: dict[str, Any] = {}
    if "Handler" in body:
        handler = body["Handler"]
        if not isinstance(handler, str) or not re.fullmatch(HANDLER_PATTERN, handler):
            raise Invalid(f"Handler: expected a handler such as app.handler, got {json.dumps(handler)}")
        changes["handler"] = handler
    if "Runtime" in body:
        runtime = body["Runtime"]
        if not isinstance(runtime, str) or not re.fullmatch(RUNTIME_PATTERN, runtime):
            raise Invalid(f"Runtime: {json.dumps(runtime)} is not supported here: expected a "
                          "pythonX.Y found on the daemon's PATH")
        try:
            probe(runtime)
        except BadRuntime as e:
            raise Invalid(f"Runtime: {e}") from None
        changes["runtime"] = runtime
    if "MemorySize" in body:
        changes["memory_mb"] = _int(body, "MemorySize", *MEMORY_MB)
    if "EphemeralStorage" in body:
        storage = body["EphemeralStorage"]
        if not isinstance(storage, dict):
            raise Invalid("EphemeralStorage: expected an object with Size")
        changes["ephemeral_storage_mb"] = _int(storage, "Size", *EPHEMERAL_MB)
    if "Timeout" in body:
        changes["timeout_s"] = _int(body, "Timeout", *TIMEOUT_S)
    if "Environment" in body:
        environment = body["Environment"] or {}
        if not isinstance(environment, dict):
            raise Invalid("Environment: expected an object with Variables")
        variables = environment.get("Variables") or {}
        if not isinstance(variables, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in variables.items()):
            raise Invalid("Environment.Variables: expected a map of strings to strings")
        if len(json.dumps(variables)) > 4096:
            raise Invalid("Environment.Variables: Lambda allows at most 4 KB of variables")
        changes["env"] = variables
    return msgspec.structs.replace(fn, **changes)


def zip_of(code: Any) -> bytes:
    if not isinstance(code, dict) or "ZipFile" not in code:
        if isinstance(code, dict) and ({"S3Bucket", "ImageUri"} & set(code)):
            raise Invalid("Code: only Code.ZipFile is supported (no S3Bucket/ImageUri)")
        raise Invalid("Code.ZipFile: a base64-encoded zip archive is required")
    try:
        return base64.b64decode(code["ZipFile"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Invalid("Code.ZipFile: not valid base64") from None


# --- handlers ----------------------------------------------------------------------------------

# A handler of the API: a Handler that is given the request's body too.
BodyHandler = Callable[[web.BaseRequest, Registry, str, bytes], Awaitable[web.Response]]


def authenticated(handler: BodyHandler) -> Handler:
    """Read the body (up to the API's limit: a base64 zip is large), check the credentials,
    then run the handler with the body."""

    @functools.wraps(handler)
    async def checked(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
        body = await api_body(request, registry, MAX_API_BODY,
                              f"Request must be smaller than {MAX_API_BODY} bytes",
                              "InvalidParameterValueException")
        if isinstance(body, web.Response):
            return body
        return await handler(request, registry, name, body)

    return checked


@authenticated
async def create_function(request: web.BaseRequest, registry: Registry, _: str,
                          body: bytes) -> web.Response:
    try:
        payload = await asyncio.to_thread(read_json, body)  # a 70 MB body takes a while
        name = payload.get("FunctionName")
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise Invalid(f"FunctionName: expected 1 to 64 letters, digits, '-' or '_', got "
                          f"{json.dumps(name)}")
        if payload.get("PackageType", "Zip") != "Zip":
            raise Invalid("PackageType: only Zip is supported")
        for key in ("Handler", "Runtime"):
            if key not in payload:
                raise Invalid(f"{key}: required")
        if registry.lookup(name) is not None:
            return aws_error(409, "ResourceConflictException", f"Function already exist: {name}")
        if name in registry.deleting:
            return aws_error(409, "ResourceConflictException",
                             f"Function {name} is being deleted; try again shortly")
        fn = apply_settings(FunctionConfig(name=name, handler="x.y", code=""), payload)
        version, sha, size = await asyncio.to_thread(
            lambda: registry.store.install_code(name, zip_of(payload.get("Code")), set()))
    except Invalid as e:
        return bad_request(str(e))
    except archive.ArchiveError as e:  # checked whole before anything was written
        return bad_request(f"Code.ZipFile: {e}")
    if registry.lookup(name) is not None:  # created by a concurrent request meanwhile
        return aws_error(409, "ResourceConflictException", f"Function already exist: {name}")
    deployed = Deployed(function=msgspec.structs.replace(fn, code=str(version)),
                        role=str(payload.get("Role", "")),
                        description=str(payload.get("Description", "")),
                        code_sha256=sha, code_size=size)
    response = changed(registry, deployed)
    response.set_status(201)
    return response


def _deployed(registry: Registry, text: str) -> tuple[Deployed | None, str]:
    """The function a path names: by name, or by ARN as boto3 passes one through."""
    parsed = parse_function_name(text)
    if parsed is None or parsed[1] not in (None, "$LATEST"):
        return None, text
    return registry.deployed.get(parsed[0]), parsed[0]


@authenticated
async def get_function(request: web.BaseRequest, registry: Registry, text: str,
                       body: bytes) -> web.Response:
    deployed, name = _deployed(registry, text)
    if deployed is None:
        return not_found(registry, name)
    return web.json_response({
        "Configuration": configuration(registry, deployed),
        "Code": {"RepositoryType": "Headwater", "Location": f"file://{deployed.function.code}"},
        "Tags": {}})


@authenticated
async def get_configuration(request: web.BaseRequest, registry: Registry, text: str,
                            body: bytes) -> web.Response:
    deployed, name = _deployed(registry, text)
    if deployed is None:
        return not_found(registry, name)
    return web.json_response(configuration(registry, deployed))


@authenticated
async def list_functions(request: web.BaseRequest, registry: Registry, _: str,
                         body: bytes) -> web.Response:
    names = sorted(registry.deployed)
    try:
        start = int(request.query.get("Marker") or 0)
        size = int(request.query.get("MaxItems") or PAGE)
    except ValueError:
        return bad_request("Marker and MaxItems must be integers")
    if not 1 <= size <= PAGE or start < 0:
        return bad_request(f"MaxItems: expected an integer from 1 to {PAGE}")
    page = names[start:start + size]
    listing: dict[str, Any] = {"Functions": [configuration(registry, registry.deployed[n])
                                          for n in page]}
    if start + size < len(names):
        listing["NextMarker"] = str(start + size)
    return web.json_response(listing)


WriteHandler = Callable[[web.BaseRequest, bytes, Registry, Deployed], Awaitable[web.Response]]


def writable(handler: WriteHandler) -> Handler:
    """Authenticated, and only for a function that exists and was deployed through the API."""

    @authenticated
    @functools.wraps(handler)
    async def checked(request: web.BaseRequest, registry: Registry, text: str,
                      body: bytes) -> web.Response:
        deployed, name = _deployed(registry, text)
        if deployed is None:
            return not_found(registry, name)
        if deployed.from_config:
            return aws_error(409, "ResourceConflictException",
                             f"Function {name} is defined in the daemon's configuration file and "
                             "is read-only through the API")
        return await handler(request, body, registry, deployed)

    return checked


def changed(registry: Registry, deployed: Deployed) -> web.Response:
    """Persist a change, put it in effect, and answer with the new configuration."""
    registry.store.save(stamp(deployed))
    registry.deploy(deployed)
    return web.json_response(configuration(registry, deployed))


@writable
async def update_code(request: web.BaseRequest, body: bytes, registry: Registry,
                      deployed: Deployed) -> web.Response:
    name = deployed.function.name
    running = registry.code_in_use(name)  # on the loop, the only thread that changes them
    try:
        version, sha, size = await asyncio.to_thread(
            lambda: registry.store.install_code(name, zip_of(read_json(body)), running))
    except Invalid as e:
        return bad_request(str(e))
    except archive.ArchiveError as e:
        return bad_request(f"ZipFile: {e}")
    if registry.deployed.get(name) is not deployed:
        return aws_error(409, "ResourceConflictException",
                         f"Function {name} was deleted during the update")
    deployed.function = msgspec.structs.replace(deployed.function, code=str(version))
    deployed.code_sha256, deployed.code_size = sha, size
    return changed(registry, deployed)


@writable
async def update_configuration(request: web.BaseRequest, body: bytes, registry: Registry,
                               deployed: Deployed) -> web.Response:
    try:
        payload = read_json(body)
        deployed.function = apply_settings(deployed.function, payload)
    except Invalid as e:
        return bad_request(str(e))
    deployed.role = str(payload.get("Role", deployed.role))
    deployed.description = str(payload.get("Description", deployed.description))
    return changed(registry, deployed)


@writable
async def delete_function(request: web.BaseRequest, body: bytes, registry: Registry,
                          deployed: Deployed) -> web.Response:
    await registry.undeploy(deployed.function.name)
    return web.Response(status=204)

