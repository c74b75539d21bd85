"""The Python runtime's own packages: boto3, as Lambda's runtime ships it, and nothing of the
daemon's installation."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from conftest import Daemon, function_toml

from workers.runtimes import python

PROBE = """\
import importlib, sys

def handler(event, context):
    found = {}
    for name in event["modules"]:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            found[name] = type(e).__name__
        else:
            found[name] = getattr(module, "__version__", None), module.__file__
    return {"modules": found, "path": sys.path, "site": "site" in sys.modules}
"""

CLIENT = """\
import boto3

def handler(event, context):
    c = boto3.client("sqs", region_name="eu-west-1")
    return [c.meta.endpoint_url, c.meta.service_model.api_version]
"""

RUNTIME = ["boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six"]
DAEMONS = ["aiohttp", "msgspec", "aiobotocore", "moto", "router", "workers", "pytest"]


def files() -> dict[str, str]:
    return {"functions/probe.py": PROBE, "own/probe.py": PROBE,
            "own/boto3/__init__.py": "__version__ = 'bundled'\n", "functions/client.py": CLIENT}


@pytest.fixture(scope="module")
def sandboxed(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("probe", "probe.handler")
                       + function_toml("bundled", "probe.handler", code="own")
                       + function_toml("client", "client.handler"), files=files())


@pytest.fixture(scope="module")
def unsandboxed(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("probe", "probe.handler"), files=files(),
                       server='[sandbox]\nmode = "none"\n')


def test_a_sandboxed_function_has_boto3_in_var_runtime_and_none_of_the_daemons_packages(
        sandboxed: Daemon) -> None:
    body = sandboxed.invoke("probe", {"modules": RUNTIME + DAEMONS}).json()
    for name in RUNTIME:
        _, file = body["modules"][name]
        assert file.startswith(f"/var/runtime/{name}"), (name, file)
    assert body["modules"]["boto3"][0] == boto3.__version__
    assert {name: body["modules"][name] for name in DAEMONS} == dict.fromkeys(
        DAEMONS, "ModuleNotFoundError")
    # Lambda's order: the code, then the runtime's packages, then the standard library; no site.
    path = body["path"]
    assert path[0] == "/var/task"
    assert path.index("/var/runtime") < min(i for i, p in enumerate(path) if "python3" in p)
    assert not [p for p in path if "-packages" in p]
    assert body["site"] is False


def test_a_package_that_brings_its_own_boto3_gets_its_own(sandboxed: Daemon) -> None:
    body = sandboxed.invoke("bundled", {"modules": ["boto3", "botocore"]}).json()
    assert body["modules"]["boto3"] == ["bundled", "/var/task/boto3/__init__.py"]
    assert body["modules"]["botocore"][1].startswith("/var/runtime/botocore/")


def test_boto3_builds_clients_from_the_runtimes_botocore(sandboxed: Daemon) -> None:
    body = sandboxed.invoke("client", {}).json()
    mine = boto3.client("sqs", region_name="eu-west-1")
    assert body == [mine.meta.endpoint_url, mine.meta.service_model.api_version]


def test_an_unsandboxed_function_gets_boto3_from_the_daemons_installation(
        unsandboxed: Daemon) -> None:
    body = unsandboxed.invoke("probe", {"modules": ["boto3"]}).json()
    assert body["modules"]["boto3"][1] == boto3.__file__
    assert os.path.dirname(os.path.dirname(boto3.__file__)) in body["path"]


def test_packages_are_the_runtimes_modules_and_their_metadata_only() -> None:
    found = {Path(p).name for p in python.packages()}
    assert {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"} <= found
    assert any(name.startswith("boto3-") and name.endswith(".dist-info") for name in found)
    assert "__pycache__" not in found
    assert all(Path(p).exists() for p in python.packages())
