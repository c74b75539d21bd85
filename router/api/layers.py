"""Lambda's layer API (version 2018-10-31): PublishLayerVersion, GetLayerVersion,
GetLayerVersionByArn, ListLayers, ListLayerVersions and DeleteLayerVersion, with Lambda's paths,
shapes, status codes and errors. The versions themselves are kept by ``router.store.layers``.

A path's LayerName may be a name or a layer's ARN (of this daemon's region and account), as
boto3 allows.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from router.api.awserror import aws_error
from router.api.management import (
    MAX_CODE_BODY,
    NO_BODY,
    Invalid,
    authenticated,
    bad_request,
    paged,
    parse_json,
    unimplemented,
    zip_of,
)
from router.config import ServerConfig
from router.run.registry import Handler, Registry
from router.store import archive
from router.store.layers import (
    LAYER_ARN,
    LAYER_NAME,
    LayerVersion,
    content_folder,
    layer_arn,
    matches,
    parse_version_arn,
    version_arn,
)
from router.store.store import now_text

PREFIX = "/2018-10-31/layers"
PUBLISH_PARAMETERS = {"Content", "Description", "CompatibleRuntimes", "CompatibleArchitectures",
                      "LicenseInfo"}
ARCHITECTURES = ("x86_64", "arm64")
# Lambda checks a runtime against its own list, which has runtimes Headwater does not run (java21,
# ruby3.3): a layer may name them for the functions elsewhere that share it.
RUNTIME_NAME = re.compile(r"[a-z][a-z0-9.]{0,39}")


def not_found() -> web.Response:
    return aws_error(404, "ResourceNotFoundException", "The resource you requested does not exist.")


def layer_name(server: ServerConfig, text: str) -> str:
    """The layer a path's LayerName names: a name, or a layer ARN of this region and account."""
    m = LAYER_ARN.fullmatch(text)
    if m is not None:
        if (m[1], m[2]) != (server.region, server.account_id):
            raise Invalid(f"LayerName: {text} is not a layer of {server.region} and account "
                          f"{server.account_id}")
        return m[3]
    if not re.fullmatch(LAYER_NAME, text):
        raise Invalid(f"LayerName: expected 1 to 140 letters, digits, '-' or '_' or a layer "
                      f"ARN, got {json.dumps(text)}")
    return text


def listed(server: ServerConfig, name: str, v: LayerVersion) -> dict[str, Any]:
    """A LayerVersionsListItem."""
    item: dict[str, Any] = {
        "LayerVersionArn": version_arn(server.region, server.account_id, name, v.version),
        "Version": v.version,
        "Description": v.description,
        "CreatedDate": v.created,
    }
    if v.compatible_runtimes:
        item["CompatibleRuntimes"] = v.compatible_runtimes
    if v.compatible_architectures:
        item["CompatibleArchitectures"] = v.compatible_architectures
    if v.license_info:
        item["LicenseInfo"] = v.license_info
    return item


def described(server: ServerConfig, name: str, v: LayerVersion) -> dict[str, Any]:
    """GetLayerVersion's and PublishLayerVersion's answer."""
    folder = content_folder(server.data_dir, name, v.version)
    return {"Content": {"Location": f"file://{folder}", "CodeSha256": v.code_sha256,
                        "CodeSize": v.code_size},
            "LayerArn": layer_arn(server.region, server.account_id, name),
            **listed(server, name, v)}


def _strings(body: dict[str, Any], key: str, most: int, valid: Any) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or len(value) > most or not all(
            isinstance(item, str) and valid(item) for item in value):
        raise Invalid(f"{key}: expected a list of at most {most} names, got {json.dumps(value)}")
    return list(dict.fromkeys(value))


def _text(body: dict[str, Any], key: str, most: int) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str) or len(value) > most:
        raise Invalid(f"{key}: expected a string of at most {most} characters")
    return value


def publish_settings(body: dict[str, Any]) -> LayerVersion:
    """PublishLayerVersion's settings as a version without content yet; ``Invalid`` if bad."""
    unknown, _ = unimplemented(body, PUBLISH_PARAMETERS, {})
    if unknown:
        raise Invalid(f"Unknown parameter(s): {', '.join(unknown)}")
    return LayerVersion(
        0, now_text(), "", 0, 0, description=_text(body, "Description", 256),
        license_info=_text(body, "LicenseInfo", 512),
        compatible_runtimes=_strings(body, "CompatibleRuntimes", 15, RUNTIME_NAME.fullmatch),
        compatible_architectures=_strings(body, "CompatibleArchitectures", 2,
                                          ARCHITECTURES.__contains__))


@authenticated(MAX_CODE_BODY, "PublishLayerVersion")
async def publish(request: web.BaseRequest, registry: Registry, text: str,
                  body: bytes) -> web.Response:
    server = registry.config.server
    name = layer_name(server, text)
    payload = await parse_json(body)
    settings = publish_settings(payload)
    data = zip_of(payload.get("Content"), "Content")
    try:
        staged, content = await asyncio.to_thread(registry.layers.unpack, name, data)
    except archive.ArchiveError as e:  # nothing of it is left on disk
        return bad_request(f"Content.ZipFile: {e}")
    settings.code_sha256, settings.code_size = content.code_sha256, content.code_size
    settings.unzipped = content.unzipped
    version = registry.layers.publish(name, staged, settings)
    return web.json_response(described(server, name, version), status=201)


def _version_of(registry: Registry, text: str) -> tuple[str, int]:
    """(layer, version number) of a path's NAME/NUMBER."""
    name, _, number = text.rpartition("/")
    if not re.fullmatch(r"[0-9]{1,9}", number):
        raise Invalid(f"VersionNumber: expected a version number, got {json.dumps(number)}")
    return layer_name(registry.config.server, name), int(number)


@authenticated(NO_BODY, "GetLayerVersion")
async def get_version(request: web.BaseRequest, registry: Registry, text: str,
                      body: bytes) -> web.Response:
    name, number = _version_of(registry, text)
    version = registry.layers.get(name, number)
    if version is None:
        return not_found()
    return web.json_response(described(registry.config.server, name, version))


@authenticated(NO_BODY, "DeleteLayerVersion")
async def delete_version(request: web.BaseRequest, registry: Registry, text: str,
                         body: bytes) -> web.Response:
    """204 whether or not the version exists, as Lambda answers; a function that uses it keeps
    its content."""
    name, number = _version_of(registry, text)
    server = registry.config.server
    arn = version_arn(server.region, server.account_id, name, number)
    if registry.layers.delete(name, number) and arn not in registry.layers_in_use():
        await asyncio.to_thread(registry.layers.remove, name, number)
    return web.Response(status=204)


def filters(request: web.BaseRequest) -> tuple[str | None, str | None]:
    runtime = request.query.get("CompatibleRuntime")
    architecture = request.query.get("CompatibleArchitecture")
    if architecture is not None and architecture not in ARCHITECTURES:
        raise Invalid(f"CompatibleArchitecture: expected one of {', '.join(ARCHITECTURES)}")
    return runtime, architecture


@authenticated(NO_BODY, "ListLayerVersions")
async def list_versions(request: web.BaseRequest, registry: Registry, text: str,
                        body: bytes) -> web.Response:
    server = registry.config.server
    name = layer_name(server, text)
    runtime, architecture = filters(request)
    layer = registry.layers.layers.get(name)
    versions = [] if layer is None else [
        listed(server, name, v) for v in reversed(layer.live()) if matches(v, runtime, architecture)]
    return paged(request, "LayerVersions", versions)


async def list_or_find(request: web.BaseRequest, registry: Registry, text: str) -> web.Response:
    """GET /2018-10-31/layers is ListLayers, and GetLayerVersionByArn with ?find=LayerVersion."""
    if request.query.get("find") == "LayerVersion":
        return await get_by_arn(request, registry, text)
    return await list_layers(request, registry, text)


@authenticated(NO_BODY, "GetLayerVersionByArn")
async def get_by_arn(request: web.BaseRequest, registry: Registry, _: str,
                     body: bytes) -> web.Response:
    server = registry.config.server
    arn = request.query.get("Arn", "")
    parsed = parse_version_arn(arn)
    if parsed is None:
        return bad_request(f"Arn: expected a layer version ARN, got {json.dumps(arn)}")
    region, account, name, number = parsed
    version = registry.layers.get(name, number) if (region, account) == (
        server.region, server.account_id) else None
    if version is None:
        return not_found()
    return web.json_response(described(server, name, version))


@authenticated(NO_BODY, "ListLayers")
async def list_layers(request: web.BaseRequest, registry: Registry, _: str,
                      body: bytes) -> web.Response:
    server = registry.config.server
    runtime, architecture = filters(request)
    layers = []
    for name in sorted(registry.layers.layers):
        found = [v for v in registry.layers.layers[name].live() if matches(v, runtime, architecture)]
        if found:
            layers.append({"LayerName": name,
                           "LayerArn": layer_arn(server.region, server.account_id, name),
                           "LatestMatchingVersion": listed(server, name, found[-1])})
    return paged(request, "Layers", layers)


# PREFIX/NAME/versions and PREFIX/NAME/versions/NUMBER, by method.
_VERSIONS: dict[str, Handler] = {"GET": list_versions, "POST": publish}
_VERSION: dict[str, Handler] = {"GET": get_version, "DELETE": delete_version}


def resolve(method: str, rest: str) -> tuple[Handler, str] | None:
    """The handler of a path under PREFIX/ (``rest`` is what follows it) and the text it is given:
    the layer's name, or NAME/NUMBER for one version. None for a path that is no operation."""
    name, _, tail = rest.partition("/")
    if not name:
        return None
    if tail == "versions":
        handler = _VERSIONS.get(method)
        return None if handler is None else (handler, unquote(name))
    number = tail.removeprefix("versions/")
    if number != tail and number and "/" not in number:
        handler = _VERSION.get(method)
        return None if handler is None else (handler, f"{unquote(name)}/{unquote(number)}")
    return None
