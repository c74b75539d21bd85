"""The Lambda management API, enough for boto3 and the AWS CLI with ``--endpoint-url``:
CreateFunction, UpdateFunctionCode, UpdateFunctionConfiguration, GetFunction,
GetFunctionConfiguration, ListFunctions, DeleteFunction and the tag operations, with Lambda's
status codes and error shapes (function URL configs are in ``router.api.urls``). Functions from
config.toml are listed too, read-only. A parameter Headwater does not implement is refused by name
rather than ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from router.api.awserror import aws_error
from router.api.body import HASH_IN_THREAD, Refusal, take_body
from router.config import (
    EPHEMERAL_MB,
    HANDLER_PATTERN,
    MEMORY_MB,
    NAME_PATTERN,
    RUNTIME_PATTERN,
    TIMEOUT_S,
    FunctionConfig,
    FunctionUrl,
    function_arn,
    reserved_names,
)
from router.run.registry import Handler, Registry, parse_function_name
from router.store import archive
from router.store.images import (
    LOCAL_TRANSPORTS,
    ImageError,
    Overrides,
    check_launch,
    read_settings,
    untagged,
)
from router.store.layers import layers_problem, parse_version_arn, tree_size, unzipped_size
from router.store.store import Deployed, stamp
from workers.runtimes import EXAMPLES, BadRuntime, probe

# Each operation's largest body, refused from Content-Length before it is read: a base64 zip of
# Lambda's 50 MB limit in a JSON body for the code operations; settings (4 KB of environment, 50
# tags, CORS lists) for the others; nothing for those that take no body.
MAX_CODE_BODY = archive.MAX_ZIPPED * 4 // 3 + 64 * 1024
MAX_SETTINGS_BODY = 256 * 1024
NO_BODY = 0
PAGE = 50  # ListFunctions' largest page, as Lambda's


class Invalid(Exception):
    """A request value Lambda would refuse with InvalidParameterValueException."""


def bad_request(message: str) -> web.Response:
    return aws_error(400, "InvalidParameterValueException", message)


def not_found(registry: Registry, name: str) -> web.Response:
    return aws_error(404, "ResourceNotFoundException",
                     f"Function not found: {function_arn(registry.config.server, name)}")


def read_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object. Hostile JSON (nested past the decoder's depth, numbers out of
    range, lone surrogates, invalid UTF-8) is ``Invalid`` like any other bad body."""
    try:
        value = msgspec.json.decode(body or b"{}")
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        raise Invalid("The request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise Invalid("The request body must be a JSON object")
    return value


async def parse_json(body: bytes) -> dict[str, Any]:
    """``read_json``, off the event loop for a large body (a 70 MB zip upload takes a while)."""
    if len(body) > HASH_IN_THREAD:
        return await asyncio.to_thread(read_json, body)
    return read_json(body)


def _off(value: Any) -> bool:
    """Whether a parameter's value asks for nothing (absent, empty, or all of its parts so)."""
    if isinstance(value, dict):
        return all(_off(v) for v in value.values())
    return value in (None, "", [], False)


# Lambda's parameters that Headwater does not implement, each with the test of a value that asks
# for nothing Headwater lacks (Lambda's default): any other value is refused, naming the parameter.
UNIMPLEMENTED: dict[str, Callable[[Any], bool]] = {
    "VpcConfig": _off,
    "Architectures": lambda v: v in (None, [], ["x86_64"]),
    "SnapStart": lambda v: _off(v) or v == {"ApplyOn": "None"},
    "FileSystemConfigs": _off,
    "TracingConfig": lambda v: _off(v) or v == {"Mode": "PassThrough"},
    "DeadLetterConfig": _off,
    "Publish": _off,
    "PublishTo": _off,
    "KMSKeyArn": _off,
    "CodeSigningConfigArn": _off,
    "EphemeralStorage": lambda v: _off(v) or v == {"Size": 512},
    "LoggingConfig": lambda v: _off(v) or v == {"LogFormat": "Text"},
    "TenancyConfig": _off,
    "CapacityProviderConfig": _off,
    "DurableConfig": _off,
}
# What each operation implements, beyond the parameters in UNIMPLEMENTED.
CREATE_PARAMETERS = {"FunctionName", "Runtime", "Role", "Handler", "Code", "Description", "Timeout",
                     "MemorySize", "PackageType", "Environment", "Tags", "Layers", "ImageConfig"}
UPDATE_PARAMETERS = {"Role", "Handler", "Description", "Timeout", "MemorySize", "Environment",
                     "Runtime", "RevisionId", "Layers", "ImageConfig"}


def unimplemented(body: dict[str, Any], implemented: set[str],
                  defaults: dict[str, Callable[[Any], bool]]) -> tuple[list[str], list[str]]:
    """The parameters of ``body`` Headwater would otherwise ignore: those it does not know, and
    those of ``defaults`` (each with the test of a value that asks for nothing) that ask for
    something."""
    unknown = sorted(key for key in body if key not in implemented and key not in defaults)
    unsupported = sorted(key for key, value in body.items()
                         if key in defaults and not defaults[key](value))
    return unknown, unsupported


def refuse_unimplemented(body: dict[str, Any], implemented: set[str]) -> None:
    """Raise ``Invalid`` naming the parameters of ``body`` Headwater would otherwise ignore."""
    unknown, unsupported = unimplemented(body, implemented, UNIMPLEMENTED)
    if unknown:
        raise Invalid(f"Unknown parameter(s): {', '.join(unknown)}")
    if unsupported:
        raise Invalid(f"Not supported by Headwater: {', '.join(unsupported)} (only their "
                      "defaults are: no VPC, x86_64, no SnapStart, no file systems, "
                      "PassThrough tracing, no dead-letter queue, no publishing, 512 MB /tmp)")


def configuration(registry: Registry, deployed: Deployed) -> dict[str, Any]:
    fn = deployed.function
    described = {
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
        **({"Layers": [{"Arn": arn, "CodeSize": code_size(registry, arn)} for arn in fn.layers]}
           if fn.layers else {}),
    }
    if fn.image:
        del described["Runtime"], described["Handler"]
        # The unpacked image's folder is named by its manifest's digest (config functions too).
        described |= {"PackageType": "Image", "CodeSha256": image_digest(fn), "CodeSize": 0}
        if fn.image_config is not None:
            described["ImageConfigResponse"] = {"ImageConfig": image_config_out(fn.image_config)}
        if (failure := registry.unavailable(fn)) is not None:
            described |= {"State": "Failed", "StateReason": failure,
                          "StateReasonCode": failure.partition(":")[0]}
    return described


def image_digest(fn: FunctionConfig) -> str:
    return Path(fn.code).name if fn.code else ""


def image_config_out(overrides: Overrides) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if overrides.entrypoint is not None:
        out["EntryPoint"] = overrides.entrypoint
    if overrides.command is not None:
        out["Command"] = overrides.command
    if overrides.working_directory:
        out["WorkingDirectory"] = overrides.working_directory
    return out


def image_config_in(value: Any) -> Overrides | None:
    """Lambda's ImageConfig; ``Invalid`` if it is not one."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict) or set(value) - {"EntryPoint", "Command", "WorkingDirectory"}:
        raise Invalid("ImageConfig: expected an object with EntryPoint, Command, WorkingDirectory")
    for key in ("EntryPoint", "Command"):
        items = value.get(key)
        if items is not None and (not isinstance(items, list) or len(items) > 1500 or
                                  not all(isinstance(i, str) for i in items)):
            raise Invalid(f"ImageConfig.{key}: expected a list of strings")
    workdir = value.get("WorkingDirectory") or ""
    if not isinstance(workdir, str) or (workdir and not workdir.startswith("/")) or len(workdir) > 1000:
        raise Invalid("ImageConfig.WorkingDirectory: expected an absolute path")
    return Overrides(value.get("EntryPoint"), value.get("Command"), workdir)


async def fetch_image(registry: Registry, fn: FunctionConfig, uri: Any) -> tuple[FunctionConfig, str]:
    """The function with its image fetched and unpacked (``code`` its cache folder), and the
    image's digest; ``Invalid`` naming what failed, and nothing left in the cache then."""
    if not isinstance(uri, str) or not uri:
        raise Invalid("Code.ImageUri: required for PackageType Image")
    try:
        folder, settings = await asyncio.to_thread(registry.images.fetch, uri, fn.image_config,
                                                   fn.env, False)
    except ImageError as e:
        raise Invalid(f"Code.ImageUri: {uri}: {e}") from None
    return msgspec.structs.replace(fn, image=uri, code=str(folder)), settings.digest


async def check_image_launch(fn: FunctionConfig) -> None:
    """That the image in the cache still starts with the function's ImageConfig and environment
    (no registry is asked: a settings change fetches no new code); ``Invalid`` if not."""
    folder = Path(fn.code)
    try:
        await asyncio.to_thread(lambda: check_launch(folder, read_settings(folder),
                                                     fn.image_config, fn.env))
    except (ImageError, OSError) as e:
        raise Invalid(f"ImageConfig: {e}") from None


NO_IMAGE_LAYERS = ("Layers: not supported for functions of PackageType Image (the image holds "
                   "what they would)")

def code_size(registry: Registry, arn: str) -> int:
    version = registry.layers.referenced(arn)
    return 0 if version is None else version.code_size


def new_layers(registry: Registry, value: Any) -> list[str]:
    """A Layers parameter's ARNs, each a version the API shows; ``Invalid`` (in Lambda's words)
    if not."""
    if value is None:
        value = []
    if not isinstance(value, list) or not all(isinstance(arn, str) for arn in value):
        raise Invalid("Layers: expected a list of layer version ARNs")
    server = registry.config.server
    if problem := layers_problem(value, server.region, server.account_id):
        raise Invalid(problem)
    for arn in value:
        _, _, name, number = parse_version_arn(arn)  # type: ignore[misc]  # checked above
        if registry.layers.get(name, number) is None:
            raise Invalid(f"Layer version {arn} does not exist.")
    return value


def check_total_size(registry: Registry, code_bytes: int, layers: list[str]) -> None:
    """Lambda's 250 MB for a function's code and its layers together, unzipped."""
    total = code_bytes + sum(v.unzipped for arn in layers
                             if (v := registry.layers.referenced(arn)) is not None)
    if total > archive.MAX_UNZIPPED:
        raise Invalid(f"Function code combined with layers exceeds the maximum allowed size of "
                      f"{archive.MAX_UNZIPPED} bytes. The actual size is {total} bytes.")


async def check_zip_with_layers(registry: Registry, data: bytes, layers: list[str]) -> None:
    """Lambda's 250 MB for a zip and its layers together. Without layers the install's own limit
    on the zip is that check, so the zip is not planned twice for it."""
    if layers:
        check_total_size(registry, await asyncio.to_thread(unzipped_size, data), layers)


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
            raise Invalid(f"Runtime: {json.dumps(runtime)} is not supported here: expected one "
                          f"such as {EXAMPLES}, found on the daemon's PATH")
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
    if "ImageConfig" in body:
        if not fn.image and body["ImageConfig"]:
            raise Invalid("ImageConfig: only for PackageType Image")
        changes["image_config"] = image_config_in(body["ImageConfig"])
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
        if reserved := reserved_names(variables):
            # Lambda's own words for it.
            raise Invalid("Lambda was unable to configure your environment variables because the "
                          "environment variables you have provided contains reserved keys that "
                          "are currently not supported for modification. Reserved keys used in "
                          f"this request: {', '.join(reserved)}")
        changes["env"] = variables
    return msgspec.structs.replace(fn, **changes)


def zip_of(code: Any, field: str = "Code") -> bytes:
    """The zip of a Code (or a layer's Content) parameter; ``Invalid`` if it has none."""
    if not isinstance(code, dict) or "ZipFile" not in code:
        if isinstance(code, dict) and ({"S3Bucket", "ImageUri"} & set(code)):
            raise Invalid(f"{field}: only {field}.ZipFile is supported (no S3Bucket"
                          + ("; ImageUri needs PackageType Image)" if field == "Code" else ")"))
        raise Invalid(f"{field}.ZipFile: a base64-encoded zip archive is required")
    try:
        return base64.b64decode(code["ZipFile"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Invalid(f"{field}.ZipFile: not valid base64") from None


# --- handlers ----------------------------------------------------------------------------------

# A handler of the API: a Handler that is given the request's body too.
BodyHandler = Callable[[web.BaseRequest, Registry, str, bytes], Awaitable[web.Response]]


def authenticated(limit: int, operation: str) -> Callable[[BodyHandler], Handler]:
    """Check the credentials, then read the body (up to the operation's ``limit``), then run the
    handler with it; an ``Invalid`` it raises is the caller's 400."""

    def wrap(handler: BodyHandler) -> Handler:
        @functools.wraps(handler)
        async def checked(request: web.BaseRequest, registry: Registry, name: str) -> web.Response:
            try:
                body = await take_body(request, registry.config.server, registry.api_mode, limit,
                                       operation)
            except Refusal as e:
                return e.response()
            try:
                return await handler(request, registry, name, body)
            except Invalid as e:
                return bad_request(str(e))

        return checked

    return wrap


# A handler of one function's operation: the request, its body, and the function it names.
FunctionHandler = Callable[[web.BaseRequest, bytes, Registry, Deployed], Awaitable[web.Response]]


def on_function(limit: int, operation: str, writes: bool,
                find: Callable[[Registry, str], tuple[Deployed | None, str]] | None = None,
                ) -> Callable[[FunctionHandler], Handler]:
    """Authenticated, for a function that exists (``find`` reads it from the path's text: by name
    or ARN by default); one that ``writes`` only for a function deployed through the API (or
    marked api_writable)."""

    def wrap(handler: FunctionHandler) -> Handler:
        @authenticated(limit, operation)
        @functools.wraps(handler)
        async def checked(request: web.BaseRequest, registry: Registry, text: str,
                          body: bytes) -> web.Response:
            deployed, name = (find or find_function)(registry, text)
            if deployed is None:
                return not_found(registry, name)
            if writes and deployed.from_config:
                return read_only(name)
            return await handler(request, body, registry, deployed)

        return checked

    return wrap


def readable(operation: str) -> Callable[[FunctionHandler], Handler]:
    return on_function(NO_BODY, operation, writes=False)


def check_tags(tags: Any) -> dict[str, str]:
    """Lambda's rules for tags: at most 50, keys of 1-128 characters not starting with "aws:",
    values of at most 256."""
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in tags.items()):
        raise Invalid("Tags: expected a map of strings to strings")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128 or key.lower().startswith("aws:"):
            raise Invalid(f"Tags: invalid key {json.dumps(key)}: 1 to 128 characters, not "
                          "starting with aws:")
        if len(value) > 256:
            raise Invalid(f"Tags: the value of {json.dumps(key)} is longer than 256 characters")
    return tags


def too_many_tags(tags: dict[str, str]) -> None:
    if len(tags) > 50:
        raise Invalid(f"Tags: a function has at most 50 tags, not {len(tags)}")


@authenticated(MAX_CODE_BODY, "CreateFunction")
async def create_function(request: web.BaseRequest, registry: Registry, _: str,
                          body: bytes) -> web.Response:
    try:
        payload = await parse_json(body)
        name = payload.get("FunctionName")
        if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
            raise Invalid(f"FunctionName: expected 1 to 64 letters, digits, '-' or '_', got "
                          f"{json.dumps(name)}")
        refuse_unimplemented(payload, CREATE_PARAMETERS)
        package = payload.get("PackageType", "Zip")
        if package not in ("Zip", "Image"):
            raise Invalid(f"PackageType: expected Zip or Image, got {json.dumps(package)}")
        for key in ("Handler", "Runtime"):
            if package == "Zip" and key not in payload:
                raise Invalid(f"{key}: required")
            if package == "Image" and key in payload:
                raise Invalid(f"{key}: not supported for PackageType Image (the image's CMD is "
                              "the handler)")
        if package == "Zip" and payload.get("ImageConfig"):
            raise Invalid("ImageConfig: only for PackageType Image")
        tags = check_tags(payload.get("Tags") or {})
        too_many_tags(tags)
        if registry.lookup(name) is not None:
            return aws_error(409, "ResourceConflictException", f"Function already exist: {name}")
        if name in registry.deleting:
            return aws_error(409, "ResourceConflictException",
                             f"Function {name} is being deleted; try again shortly")
        # A function made through the API has no URL until CreateFunctionUrlConfig makes one.
        code = payload.get("Code")
        uri = code.get("ImageUri") if isinstance(code, dict) and package == "Image" else None
        if package == "Image" and not uri:
            raise Invalid("Code.ImageUri: required for PackageType Image")
        if package == "Image" and not registry.isolation.enabled:
            raise Invalid('PackageType: an Image function runs in the sandbox, which this daemon '
                          'does not have ([sandbox] mode = "none")')
        if package == "Image" and payload.get("Layers"):
            raise Invalid(NO_IMAGE_LAYERS)
        fn = apply_settings(FunctionConfig(name=name, handler="" if uri else "x.y",
                                           image=str(uri or ""), url=FunctionUrl(enabled=False)),
                            payload)
        layers = new_layers(registry, payload.get("Layers"))
        if package == "Image":
            fn, sha = await fetch_image(registry, fn, uri)
            version, size = Path(fn.code), 0
        else:
            data = zip_of(code)
            await check_zip_with_layers(registry, data, layers)
            await registry.prepare_layers(layers)
            version, sha, size = await asyncio.to_thread(
                lambda: registry.store.install_code(name, data, set()))
    except archive.ArchiveError as e:  # checked whole before anything was written
        return bad_request(f"Code.ZipFile: {e}")
    if registry.lookup(name) is not None:  # created by a concurrent request meanwhile
        return aws_error(409, "ResourceConflictException", f"Function already exist: {name}")
    deployed = Deployed(function=msgspec.structs.replace(fn, code=str(version), layers=layers),
                        role=str(payload.get("Role", "")),
                        description=str(payload.get("Description", "")),
                        code_sha256=sha, code_size=size, tags=tags)
    response = changed(registry, deployed)
    response.set_status(201)
    return response


def find_function(registry: Registry, text: str) -> tuple[Deployed | None, str]:
    """The function a path names: by name, or by ARN as boto3 passes one through."""
    name = latest_name(text)
    if name is None:
        return None, text
    return registry.deployed.get(name), name


def latest_name(text: str) -> str | None:
    """The function a FunctionName parameter names, if it names one at $LATEST (the only version
    Headwater has)."""
    parsed = parse_function_name(text)
    if parsed is None or parsed[1] not in (None, "$LATEST"):
        return None
    return parsed[0]


@readable("GetFunction")
async def get_function(request: web.BaseRequest, body: bytes, registry: Registry,
                       deployed: Deployed) -> web.Response:
    fn = deployed.function
    code: dict[str, str] = {"RepositoryType": "Headwater", "Location": f"file://{fn.code}"}
    if fn.image:
        name = fn.image.removeprefix("docker://").partition("@")[0]
        if not fn.image.startswith(LOCAL_TRANSPORTS):
            name = untagged(name)
        code = {"RepositoryType": "ECR", "ImageUri": fn.image}
        if digest := image_digest(fn):
            code["ResolvedImageUri"] = f"{name}@sha256:{digest}"
    return web.json_response({"Configuration": configuration(registry, deployed), "Code": code,
                              "Tags": deployed.tags})


@readable("GetFunctionConfiguration")
async def get_configuration(request: web.BaseRequest, body: bytes, registry: Registry,
                            deployed: Deployed) -> web.Response:
    return web.json_response(configuration(registry, deployed))


def page_of(request: web.BaseRequest) -> tuple[int, int]:
    """ListFunctions' and ListFunctionUrlConfigs' Marker and MaxItems; ``Invalid`` if bad."""
    try:
        start = int(request.query.get("Marker") or 0)
        size = int(request.query.get("MaxItems") or PAGE)
    except ValueError:
        raise Invalid("Marker and MaxItems must be integers") from None
    if not 1 <= size <= PAGE or start < 0:
        raise Invalid(f"MaxItems: expected an integer from 1 to {PAGE}")
    return start, size


def paged(request: web.BaseRequest, key: str, items: list[Any],
          render: Callable[[Any], Any] = lambda item: item) -> web.Response:
    """The page of ``items`` that Marker and MaxItems ask for, each ``render``ed (only the page's),
    with NextMarker when more follow; ``Invalid`` if the paging is bad."""
    start, size = page_of(request)
    listing: dict[str, Any] = {key: [render(item) for item in items[start:start + size]]}
    if start + size < len(items):
        listing["NextMarker"] = str(start + size)
    return web.json_response(listing)


@authenticated(NO_BODY, "ListFunctions")
async def list_functions(request: web.BaseRequest, registry: Registry, _: str,
                         body: bytes) -> web.Response:
    return paged(request, "Functions", sorted(registry.deployed),
                 lambda name: configuration(registry, registry.deployed[name]))




def read_only(name: str) -> web.Response:
    return aws_error(409, "ResourceConflictException",
                     f"Function {name} is defined in the daemon's configuration file and is "
                     "read-only through the API")


def writable(limit: int, operation: str,
             find: Callable[[Registry, str], tuple[Deployed | None, str]] | None = None,
             ) -> Callable[[FunctionHandler], Handler]:
    return on_function(limit, operation, writes=True, find=find)


def changed(registry: Registry, deployed: Deployed) -> web.Response:
    """Persist a change, put it in effect, and answer with the new configuration."""
    registry.store.save(stamp(deployed))
    registry.deploy(deployed)
    return web.json_response(configuration(registry, deployed))


@writable(MAX_CODE_BODY, "UpdateFunctionCode")
async def update_code(request: web.BaseRequest, body: bytes, registry: Registry,
                      deployed: Deployed) -> web.Response:
    name = deployed.function.name
    running = registry.code_in_use(name)  # on the loop, the only thread that changes them
    fn = deployed.function
    try:
        payload = await parse_json(body)
        if fn.image:
            if "ZipFile" in payload:
                raise Invalid("ZipFile: the function's PackageType is Image: give ImageUri")
            fn, sha = await fetch_image(registry, fn, payload.get("ImageUri"))
            version, size = Path(fn.code), 0
        else:
            if "ImageUri" in payload:
                raise Invalid("ImageUri: the function's PackageType is Zip: give ZipFile")
            data = zip_of(payload)
            await check_zip_with_layers(registry, data, fn.layers)
            version, sha, size = await asyncio.to_thread(
                lambda: registry.store.install_code(name, data, running))
    except archive.ArchiveError as e:
        return bad_request(f"ZipFile: {e}")
    if registry.deployed.get(name) is not deployed:
        return aws_error(409, "ResourceConflictException",
                         f"Function {name} was deleted during the update")
    # Onto the function as it is now: a configuration update made during the awaits stays.
    deployed.function = msgspec.structs.replace(deployed.function, code=str(version), image=fn.image)
    deployed.code_sha256, deployed.code_size = sha, size
    return changed(registry, deployed)


@writable(MAX_SETTINGS_BODY, "UpdateFunctionConfiguration")
async def update_configuration(request: web.BaseRequest, body: bytes, registry: Registry,
                               deployed: Deployed) -> web.Response:
    payload = read_json(body)
    refuse_unimplemented(payload, UPDATE_PARAMETERS)
    if payload.get("RevisionId", deployed.revision_id) != deployed.revision_id:
        return aws_error(412, "PreconditionFailedException",
                         "The Revision Id provided does not match the latest Revision Id. "
                         "Call the GetFunction/GetAlias API to retrieve the latest Revision Id")
    revision = deployed.revision_id
    function = apply_settings(deployed.function, payload)
    if function.image:
        if payload.get("Layers"):
            raise Invalid(NO_IMAGE_LAYERS)
        if "ImageConfig" in payload or "Environment" in payload:
            await check_image_launch(function)
    elif "Layers" in payload:
        layers = new_layers(registry, payload["Layers"])
        check_total_size(registry, await asyncio.to_thread(tree_size, function.code), layers)
        await registry.prepare_layers(layers)
        function = msgspec.structs.replace(function, layers=layers)
    if registry.deployed.get(deployed.function.name) is not deployed:
        return aws_error(409, "ResourceConflictException",
                         f"Function {deployed.function.name} was deleted during the update")
    if deployed.revision_id != revision:  # another update landed during the awaits
        return aws_error(409, "ResourceConflictException",
                         "The operation cannot be performed at this time. An update is in "
                         f"progress for resource: {function_arn(registry.config.server, function.name)}")
    deployed.function = function
    deployed.role = str(payload.get("Role", deployed.role))
    deployed.description = str(payload.get("Description", deployed.description))
    return changed(registry, deployed)


@writable(NO_BODY, "DeleteFunction")
async def delete_function(request: web.BaseRequest, body: bytes, registry: Registry,
                          deployed: Deployed) -> web.Response:
    await registry.undeploy(deployed.function.name)
    return web.Response(status=204)


# --- tags: /2017-03-31/tags/ARN ----------------------------------------------------------------

_FUNCTION_ARN = re.compile(rf"arn:aws[a-zA-Z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:({NAME_PATTERN})")


def _tagged(registry: Registry, arn: str) -> tuple[Deployed | None, str]:
    """The function a tag operation's ARN names (tags are on the function, not a version)."""
    m = _FUNCTION_ARN.fullmatch(arn)
    if m is None:
        raise Invalid(f"Resource: expected a function ARN, got {json.dumps(arn)}")
    return registry.deployed.get(m[1]), m[1]


def tagged(limit: int, operation: str) -> Callable[[FunctionHandler], Handler]:
    """``writable``, for a function named by the ARN in a tag operation's path."""

    def find(registry: Registry, arn: str) -> tuple[Deployed | None, str]:
        try:
            return _tagged(registry, arn)
        except Invalid:
            return None, arn

    return writable(limit, operation, find)


@authenticated(NO_BODY, "ListTags")
async def list_tags(request: web.BaseRequest, registry: Registry, arn: str,
                    body: bytes) -> web.Response:
    deployed, name = _tagged(registry, arn)
    if deployed is None:
        return not_found(registry, name)
    return web.json_response({"Tags": deployed.tags})


@tagged(MAX_SETTINGS_BODY, "TagResource")
async def tag_resource(request: web.BaseRequest, body: bytes, registry: Registry,
                       deployed: Deployed) -> web.Response:
    payload = read_json(body)
    if "Tags" not in payload:
        raise Invalid("Tags: required")
    tags = deployed.tags | check_tags(payload["Tags"])
    too_many_tags(tags)
    deployed.tags = tags
    registry.store.save(deployed)
    return web.Response(status=204)


@tagged(NO_BODY, "UntagResource")
async def untag_resource(request: web.BaseRequest, body: bytes, registry: Registry,
                         deployed: Deployed) -> web.Response:
    keys = request.query.getall("tagKeys", [])
    if not keys:
        return bad_request("TagKeys: required")
    deployed.tags = {k: v for k, v in deployed.tags.items() if k not in keys}
    registry.store.save(deployed)
    return web.Response(status=204)
