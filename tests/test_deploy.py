"""Deployment through the Lambda management API (boto3, the AWS CLI, `headwater deploy`), zip
validation, atomic code updates, persistence across restarts, and credentials."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import Daemon, function_toml

from router.cli.main import pip_command
from router.config import FunctionConfig, parse
from router.run import registry as registry_module
from router.run.registry import Registry
from router.store.store import Deployed

V1 = "import time\nVERSION = 1\n\ndef handler(event, context):\n" \
     "    time.sleep(event.get('seconds', 0))\n    return {'version': VERSION}\n"


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buffer.getvalue()


def lambda_client(daemon: Daemon, key: str = "AKIDHEADWATER", secret: str = "s3cret"):  # type: ignore[no-untyped-def]
    return boto3.client("lambda", endpoint_url=daemon.url, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def create(client, name: str, files: dict[str, str] | None = None, **extra):  # type: ignore[no-untyped-def]
    return client.create_function(
        FunctionName=name, Runtime=f"python3.{sys.version_info.minor}",
        Role="arn:aws:iam::123456789012:role/x", Handler="app.handler",
        Code={"ZipFile": zipped(files or {"app.py": V1})}, **extra)


SERVER = 'access_keys = { AKIDHEADWATER = "s3cret" }\ntokens = ["tok-123"]'


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon(function_toml("fromconfig", "outcomes.count"), server=SERVER)


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    return lambda_client(daemon)


def test_create_invoke_get_list_delete(client) -> None:  # type: ignore[no-untyped-def]
    created = create(client, "made", MemorySize=256, Timeout=5,
                     Environment={"Variables": {"K": "v"}}, Description="first")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionName"] == "made" and created["MemorySize"] == 256
    assert created["Timeout"] == 5 and created["Environment"] == {"Variables": {"K": "v"}}
    assert created["State"] == "Active" and created["CodeSize"] > 0 and created["CodeSha256"]
    assert created["FunctionArn"].endswith(":function:made")
    r = client.invoke(FunctionName="made", Payload=b"{}")
    assert json.loads(r["Payload"].read()) == {"version": 1}
    got = client.get_function(FunctionName="made")
    assert got["Configuration"]["Description"] == "first"
    assert client.get_function_configuration(FunctionName="made")["Handler"] == "app.handler"
    names = [f["FunctionName"] for page in client.get_paginator("list_functions").paginate()
             for f in page["Functions"]]
    assert "made" in names and "fromconfig" in names
    client.delete_function(FunctionName="made")
    with pytest.raises(ClientError) as caught:
        client.get_function(FunctionName="made")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError):
        client.invoke(FunctionName="made", Payload=b"{}")


def test_list_is_paginated(client) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        create(client, f"page{i}")
    first = client.list_functions(MaxItems=2)
    assert len(first["Functions"]) == 2 and first["NextMarker"]
    everything = [f["FunctionName"] for page in
                  client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2})
                  for f in page["Functions"]]
    assert {"page0", "page1", "page2", "fromconfig"} <= set(everything)
    assert len(everything) == len(set(everything))


@pytest.mark.parametrize(("kwargs", "status", "code", "words"), [
    ({"FunctionName": "fromconfig"}, 409, "ResourceConflictException", "exist"),
    ({"FunctionName": "bad name!"}, 400, "InvalidParameterValueException", "FunctionName"),
    ({"FunctionName": "t1", "Timeout": 901}, 400, "InvalidParameterValueException", "Timeout"),
    ({"FunctionName": "t2", "MemorySize": 20000}, 400, "InvalidParameterValueException", "MemorySize"),
    ({"FunctionName": "t3", "Runtime": "nodejs18.x"}, 400, "InvalidParameterValueException",
     "Runtime"),
])
def test_create_errors(client, kwargs, status: int, code: str, words: str) -> None:  # type: ignore[no-untyped-def]
    args = {"FunctionName": "x", "Runtime": f"python3.{sys.version_info.minor}",
            "Role": "arn:aws:iam::1:role/x", "Handler": "app.handler",
            "Code": {"ZipFile": zipped({"app.py": V1})}, **kwargs}
    with pytest.raises(ClientError) as caught:
        client.create_function(**args)
    error = caught.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["Error"]["Code"] == code
    assert words in error["Error"]["Message"]


@pytest.mark.parametrize(("name", "data", "words"), [
    ("../escape.py", "x", "../escape.py"),
    ("/etc/passwd", "x", "/etc/passwd"),
])
def test_hostile_zip_is_refused_naming_the_entry(client, name: str, data: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as caught:
        create(client, "hostile", {name: data, "app.py": V1})
    error = caught.value.response
    assert error["Error"]["Code"] == "InvalidParameterValueException"
    assert words in error["Error"]["Message"]
    with pytest.raises(ClientError):
        client.get_function(FunctionName="hostile")


def test_config_functions_are_read_only(client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as caught:
        client.delete_function(FunctionName="fromconfig")
    assert caught.value.response["Error"]["Code"] == "ResourceConflictException"
    with pytest.raises(ClientError):
        client.update_function_code(FunctionName="fromconfig", ZipFile=zipped({"app.py": V1}))


def test_unknown_function_is_404_everywhere(client) -> None:  # type: ignore[no-untyped-def]
    for call in (lambda: client.get_function(FunctionName="ghost"),
                 lambda: client.delete_function(FunctionName="ghost"),
                 lambda: client.update_function_configuration(FunctionName="ghost", Timeout=5)):
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_code_update_is_atomic_for_running_invocations(client) -> None:  # type: ignore[no-untyped-def]
    create(client, "atomic")
    results: dict[str, object] = {}
    slow = threading.Thread(target=lambda: results.update(old=json.loads(client.invoke(
        FunctionName="atomic", Payload=b'{"seconds": 1}')["Payload"].read())))
    slow.start()
    time.sleep(0.4)
    updated = client.update_function_code(
        FunctionName="atomic", ZipFile=zipped({"app.py": V1.replace("VERSION = 1", "VERSION = 2")}))
    assert updated["CodeSha256"]
    assert json.loads(client.invoke(FunctionName="atomic", Payload=b"{}")["Payload"].read()) == \
        {"version": 2}
    slow.join()
    assert results["old"] == {"version": 1}


def test_updates_keep_the_code_of_running_invocations(client) -> None:  # type: ignore[no-untyped-def]
    reader = "import time\n\ndef handler(event, context):\n    time.sleep(event.get('seconds', 0))\n" \
             "    return open('data.txt').read()\n"
    create(client, "inuse", {"app.py": reader, "data.txt": "v1"})
    results: dict[str, object] = {}
    slow = threading.Thread(target=lambda: results.update(old=json.loads(client.invoke(
        FunctionName="inuse", Payload=b'{"seconds": 1.5}')["Payload"].read())))
    slow.start()
    time.sleep(0.4)
    for data in ("v2", "v3"):  # two updates: the running invocation's version is no longer newest
        client.update_function_code(FunctionName="inuse",
                                    ZipFile=zipped({"app.py": reader, "data.txt": data}))
    assert json.loads(client.invoke(FunctionName="inuse")["Payload"].read()) == "v3"
    slow.join()
    assert results["old"] == "v1"


def test_update_configuration_applies_to_new_invocations(client) -> None:  # type: ignore[no-untyped-def]
    create(client, "reconf", {"app.py": "import os\n\ndef handler(e, c):\n"
                                        "    return [os.environ.get('MODE'), c.memory_limit_in_mb]\n"})
    assert json.loads(client.invoke(FunctionName="reconf")["Payload"].read()) == [None, "128"]
    client.update_function_configuration(FunctionName="reconf", MemorySize=512,
                                         Environment={"Variables": {"MODE": "new"}})
    assert json.loads(client.invoke(FunctionName="reconf")["Payload"].read()) == ["new", "512"]


# --- credentials -------------------------------------------------------------------------------


def test_wrong_or_missing_credentials_are_403(daemon: Daemon) -> None:
    for key, secret, code in (("AKIDHEADWATER", "wrong", "InvalidSignatureException"),
                              ("AKIDUNKNOWN", "s3cret", "UnrecognizedClientException")):
        with pytest.raises(ClientError) as caught:
            lambda_client(daemon, key, secret).list_functions()
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert caught.value.response["Error"]["Code"] == code
    unsigned = daemon.invoke("fromconfig", {})
    assert unsigned.status == 403
    assert unsigned.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    bad_token = daemon.invoke("fromconfig", {}, headers={"Authorization": "Bearer nope"})
    assert bad_token.status == 403
    assert daemon.invoke("fromconfig", {}, headers={"Authorization": "Bearer tok-123"}).status == 200
    assert "s3cret" not in "\n".join(daemon.lines) and "tok-123" not in "\n".join(daemon.lines)


def test_public_listen_without_credentials_refuses_to_start(tmp_path: Path) -> None:
    for server in ('listen = "0.0.0.0:0"\nauth = "none"', 'listen = "0.0.0.0:0"'):
        config = tmp_path / "config.toml"
        config.write_text(f"[server]\n{server}\n")
        result = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(config)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, result.stderr
        assert "server." in result.stderr


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli_invoke(daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDHEADWATER", "AWS_SECRET_ACCESS_KEY": "s3cret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    version = subprocess.run(["aws", "--version"], capture_output=True, text=True, env=env)
    v2 = ["--cli-binary-format", "raw-in-base64-out"] if "aws-cli/2" in version.stdout else []
    result = subprocess.run(
        ["aws", "lambda", "invoke", "--endpoint-url", daemon.url, "--function-name", "fromconfig",
         "--payload", "{}", *v2, str(out)],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["StatusCode"] == 200
    assert json.loads(out.read_text())["counter"] >= 1


# --- the new user's path -------------------------------------------------------------------------


def headwater(*args: str, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, **(env or {})})


def test_init_deploy_and_curl_the_function_url(daemon: Daemon, tmp_path: Path) -> None:
    made = headwater("init", "thumbs", "--blueprint", "http-api", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    auth = {"HEADWATER_TOKEN": "tok-123"}
    deployed = headwater("deploy", str(tmp_path / "thumbs"), "--name", "thumbs", "--handler",
                         "app.handler", "--memory", "256", "--env", "A=1", "--url", daemon.url,
                         "--function-url", "NONE", env=auth)
    assert deployed.returncode == 0, deployed.stderr
    assert "created thumbs" in deployed.stdout
    assert f"function URL (NONE): {daemon.url}/urls/thumbs/" in deployed.stdout
    r = daemon.request("GET", "/urls/thumbs/items/7?x=1")
    assert r.status == 200, r
    listed = headwater("functions", "--url", daemon.url, env=auth)
    assert "thumbs" in listed.stdout and "256" in listed.stdout
    again = headwater("deploy", str(tmp_path / "thumbs"), "--name", "thumbs", "--url", daemon.url,
                      env=auth)
    assert again.returncode == 0 and "updated thumbs" in again.stdout
    event = tmp_path / "event.json"
    event.write_text(headwater("event", "generate", "api-v2").stdout)
    invoked = headwater("invoke", "thumbs", "--event", str(event), "--url", daemon.url, env=auth)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["statusCode"] == 200


def test_deploy_builds_requirements_into_the_package(daemon: Daemon, tmp_path: Path) -> None:
    """requirements.txt is installed into the package (pip install --target, wheels for the
    runtime's platform), as sam build does: the function imports what neither runtime has."""
    folder = tmp_path / "withdeps"
    folder.mkdir()
    (folder / "requirements.txt").write_text("tabulate==0.9.0\n")
    (folder / "app.py").write_text("import tabulate\n\ndef handler(event, context):\n"
                                   "    return tabulate.__version__\n")
    auth = {"HEADWATER_TOKEN": "tok-123"}
    deployed = headwater("deploy", str(folder), "--name", "withdeps", "--url", daemon.url, env=auth)
    assert deployed.returncode == 0, deployed.stderr
    assert not (folder / "tabulate").exists()  # built aside, not into the user's folder
    r = daemon.invoke("withdeps", {}, headers={"Authorization": "Bearer tok-123"})
    assert r.json() == "0.9.0", r
    (folder / "requirements.txt").write_text("no-such-package-headwater==1\n")
    failed = headwater("deploy", str(folder), "--name", "withdeps", "--url", daemon.url, env=auth)
    assert failed.returncode == 1 and "cannot build" in failed.stderr


def test_pip_command_targets_the_runtime_and_lambdas_platform() -> None:
    command = pip_command("/py", Path("r.txt"), Path("/t"), "python3.12", "aarch64")
    assert command[:3] == ["/py", "-m", "pip"]
    assert command[command.index("--target"):command.index("--target") + 2] == ["--target", "/t"]
    assert "--only-binary=:all:" in command
    assert command[command.index("--platform") + 1] == "manylinux2014_aarch64"
    assert command[command.index("--python-version") + 1] == "3.12"


def test_deploy_signs_with_aws_credentials(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "app.py").write_text(V1)
    env = {"AWS_ACCESS_KEY_ID": "AKIDHEADWATER", "AWS_SECRET_ACCESS_KEY": "s3cret"}
    result = headwater("deploy", str(tmp_path / "f"), "--name", "signed", "--url", daemon.url,
                       env=env)
    assert result.returncode == 0, result.stderr
    wrong = headwater("functions", "--url", daemon.url, env={**env, "AWS_SECRET_ACCESS_KEY": "x"})
    assert wrong.returncode == 1 and "403" in wrong.stderr


def test_deployed_functions_survive_a_restart(make_daemon) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon("")
    client = lambda_client(first)
    create(client, "durable")
    assert first.stop() == 0
    second = Daemon(first.folder, first.config_path.read_text()).start()
    try:
        again = lambda_client(second)
        assert json.loads(again.invoke(FunctionName="durable")["Payload"].read()) == {"version": 1}
        assert again.get_function(FunctionName="durable")["Configuration"]["CodeSize"] > 0
    finally:
        second.stop()


def test_config_function_marked_writable_takes_api_updates_across_restarts(make_daemon) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon(function_toml("editable", "outcomes.count", api_writable=True))
    client = lambda_client(first)
    assert "counter" in json.loads(client.invoke(FunctionName="editable")["Payload"].read())
    client.update_function_code(FunctionName="editable", ZipFile=zipped({"outcomes.py": V1.replace(
        "def handler", "def count")}))
    assert json.loads(client.invoke(FunctionName="editable")["Payload"].read()) == {"version": 1}
    assert first.stop() == 0
    second = Daemon(first.folder, first.config_path.read_text()).start()
    try:
        again = lambda_client(second)
        assert json.loads(again.invoke(FunctionName="editable")["Payload"].read()) == {"version": 1}
    finally:
        second.stop()


def test_a_signature_cannot_be_replayed_with_another_body(daemon: Daemon) -> None:
    import hashlib
    import http.client

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{daemon.url}/2015-03-31/functions/fromconfig/invocations"
    signed = AWSRequest(method="POST", url=url, data=b'{"amount": 1}',
                        headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDHEADWATER", "s3cret"), "lambda", "us-east-1").add_auth(signed)
    headers = dict(signed.headers.items())

    def send(body: bytes, extra: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        conn.request("POST", "/2015-03-31/functions/fromconfig/invocations", body,
                     {**headers, **extra})
        status = conn.getresponse().status
        conn.close()
        return status

    assert send(b'{"amount": 1}', {}) == 200
    forged = b'{"amount": 1000000}'
    assert send(forged, {}) == 403
    assert send(forged, {"X-Amz-Content-SHA256": hashlib.sha256(forged).hexdigest()}) == 403
    assert send(forged, {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}) == 403


class StuckPool:
    """A pool whose workers outlive even SIGKILL (a process stuck in the kernel)."""

    def __init__(self, name: str) -> None:
        self.config = FunctionConfig(name=name, handler="app.handler", code="")
        self.killed = False

    def close(self) -> None:
        pass

    def kill_all(self) -> None:
        self.killed = True

    async def stopped(self) -> None:
        await asyncio.Event().wait()


async def test_delete_cleans_up_even_when_workers_outlive_the_kill(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "KILLED_EXIT_S", 0.01)
    config = parse({"server": {"shutdown_grace_s": 0}}, tmp_path, {})
    registry = Registry(config, {})
    pool = StuckPool("stuck")
    deployed = Deployed(function=pool.config)
    registry.store.save(deployed)
    registry.pools["stuck"], registry.deployed["stuck"] = pool, deployed  # type: ignore[assignment]
    registry.capacity.pools.append(pool)  # type: ignore[arg-type]
    await registry.undeploy("stuck")
    assert pool.killed
    assert not (tmp_path / "var" / "functions" / "stuck").exists()
    assert "stuck" not in registry.deleting and pool not in registry.capacity.pools
    await registry.close(0)
