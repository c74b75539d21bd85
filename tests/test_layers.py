"""Layers: the layer API through boto3 and the AWS CLI, and functions that use layers in their
sandbox: Python and Node.js modules from /opt, the order layers are laid in, read-only content, a
deleted version that keeps its users working, Lambda's errors, paging; the /opt merge, the
workers' paths and the sandbox's bind as tables."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from conftest import RUNTIME, Daemon, function_toml
from test_deploy import lambda_client

from router.config import ServerConfig
from router.run.pool import layer_env
from router.store.layers import layers_problem
from router.store.opt import merge, opt_folder
from workers.runtimes import Launcher
from workers.sandbox import Network, Sandbox, argv

SERVER = 'access_keys = { AKIDHEADWATER = "s3cret" }\ntokens = ["tok-layers"]'
BEARER = {"Authorization": "Bearer tok-layers"}
ROLE = "arn:aws:iam::123456789012:role/x"
ACCOUNT = ServerConfig().account_id
ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:{{}}:{{}}"
VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
NODE = shutil.which("node")
NODE_MAJOR = (re.match(r"v(\d+)", subprocess.run([NODE, "--version"], capture_output=True,
                                                 text=True).stdout)[1] if NODE else "")
AWS_CLI = Path(sys.executable).with_name("aws")


def zipped(files: dict[str, str], executable: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o755 if name in executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, text)
    return buffer.getvalue()


def publish_layer(client, name: str, files: dict[str, str], **extra):  # type: ignore[no-untyped-def]
    return client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped(files)}, **extra)


def create(client, name: str, code: dict[str, str], layers: list[str], **extra):  # type: ignore[no-untyped-def]
    settings = {"Runtime": RUNTIME, "Handler": "app.handler", **extra}
    return client.create_function(FunctionName=name, Role=ROLE, Code={"ZipFile": zipped(code)},
                                  Layers=layers, **settings)


def call(client, name: str, payload: object = None) -> object:  # type: ignore[no-untyped-def]
    answer = client.invoke(FunctionName=name, Payload=json.dumps(payload or {}))
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return body


def error_of(caught: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = caught.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"]["Message"])


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon("", server=SERVER)


@pytest.fixture(scope="module")
def client(daemon: Daemon):  # type: ignore[no-untyped-def]
    return lambda_client(daemon)


# --- functions that use layers -------------------------------------------------------------------

PY_USER = """\
import os, subprocess, sys
import greet, deep

def handler(event, context):
    return {"greet": greet.hello(), "deep": deep.X, "file": greet.__file__,
            "path": [p for p in sys.path if p.startswith(("/opt", "/var/task"))],
            "tool": subprocess.run(["layer-tool"], capture_output=True, text=True).stdout,
            "ld": os.environ.get("LD_LIBRARY_PATH")}
"""


def test_a_python_function_imports_from_its_layer(client) -> None:  # type: ignore[no-untyped-def]
    files = {"python/greet.py": "def hello():\n    return 'from a layer'\n",
             f"python/lib/python{VERSION}/site-packages/deep.py": "X = 'site-packages'\n",
             "bin/layer-tool": "#!/bin/sh\necho tool from /opt/bin\n"}
    layer = client.publish_layer_version(
        LayerName="pylib", Description="greetings", LicenseInfo="MIT",
        CompatibleRuntimes=[RUNTIME], CompatibleArchitectures=["x86_64"],
        Content={"ZipFile": zipped(files, executable=("bin/layer-tool",))})
    arn = ARN.format("pylib", 1)
    assert layer["LayerVersionArn"] == arn and layer["Version"] == 1
    assert layer["LayerArn"] == arn.rpartition(":")[0]
    assert layer["Content"]["CodeSize"] > 0 and len(layer["Content"]["CodeSha256"]) == 44
    assert layer["Content"]["Location"].startswith("file://")
    assert (layer["Description"], layer["LicenseInfo"]) == ("greetings", "MIT")
    made = create(client, "pyuser", {"app.py": PY_USER}, [arn])
    assert made["Layers"] == [{"Arn": arn, "CodeSize": layer["Content"]["CodeSize"]}]
    got = call(client, "pyuser")
    assert got == {"greet": "from a layer", "deep": "site-packages", "file": "/opt/python/greet.py",
                   "path": ["/var/task", f"/opt/python/lib/python{VERSION}/site-packages",
                            "/opt/python"],
                   "tool": "tool from /opt/bin\n", "ld": "/opt/lib"}
    assert client.get_function_configuration(FunctionName="pyuser")["Layers"] == made["Layers"]


def test_without_a_sandbox_the_layers_are_on_the_paths_where_they_are(make_daemon) -> None:  # type: ignore[no-untyped-def]
    bare = make_daemon('[sandbox]\nmode = "none"\n', server=SERVER)
    client = lambda_client(bare)
    publish_layer(client, "hostlib", {"python/greet.py": "def hello():\n    return 'host'\n",
                                      f"python/lib/python{VERSION}/site-packages/deep.py": "X = 1\n"})
    create(client, "hostuser", {"app.py": "import greet\n\ndef handler(event, context):\n"
                                          "    return [greet.hello(), greet.__file__]\n"},
           [ARN.format("hostlib", 1)])
    folder = (bare.folder / "var" / "layers" / "hostlib" / "1").resolve()
    assert call(client, "hostuser") == ["host", str(folder / "python" / "greet.py")]


NODE_USER = """\
const greeter = require("greeter");
const versioned = require("versioned");
exports.handler = async () => ({ greeting: greeter.greet(), versioned: versioned.name,
                                 from: require.resolve("greeter") });
"""


@pytest.mark.skipif(NODE is None, reason="no Node.js on this machine")
def test_a_node_function_requires_from_its_layer(client) -> None:  # type: ignore[no-untyped-def]
    publish_layer(client, "nodelib", {
        "nodejs/node_modules/greeter/index.js": "exports.greet = () => 'hi from a layer';\n",
        f"nodejs/node{NODE_MAJOR}/node_modules/versioned/index.js":
            f"exports.name = 'node{NODE_MAJOR}';\n"})
    create(client, "nodeuser", {"index.js": NODE_USER}, [ARN.format("nodelib", 1)],
           Runtime=f"nodejs{NODE_MAJOR}.x", Handler="index.handler")
    assert call(client, "nodeuser") == {"greeting": "hi from a layer",
                                        "versioned": f"node{NODE_MAJOR}",
                                        "from": "/opt/nodejs/node_modules/greeter/index.js"}


SHELL_RUNTIME = (Path(__file__).parent.parent / "router" / "cli" / "blueprints" / "provided-shell"
                 / "bootstrap").read_text()
SHELL_HANDLER = "handler() {\n  printf '\"%s\"' \"$WHO\"\n}\n"


def runtime_saying(who: str) -> str:
    return SHELL_RUNTIME.replace("set -eu", f"set -eu\nexport WHO={who!r}")


@pytest.mark.parametrize(("package", "want"), [
    ({}, "the layer's"),
    # The package's own bootstrap wins over a layer's, as on Lambda.
    ({"bootstrap": runtime_saying("own")}, "own"),
])
def test_a_custom_runtime_from_a_layer(client, package: dict[str, str], want: str) -> None:  # type: ignore[no-untyped-def]
    name = f"shellrt-{len(package)}"
    layer = client.publish_layer_version(LayerName=name, Content={"ZipFile": zipped(
        {"bootstrap": runtime_saying("the layer's")}, executable=("bootstrap",))})
    client.create_function(FunctionName=name, Role=ROLE, Runtime="provided.al2023",
                           Handler="function.handler", Layers=[layer["LayerVersionArn"]],
                           Code={"ZipFile": zipped({"function.sh": SHELL_HANDLER, **package},
                                                   executable=("bootstrap",))})
    assert call(client, name) == want


def test_a_layers_bootstrap_must_be_executable(client) -> None:  # type: ignore[no-untyped-def]
    layer = publish_layer(client, "shellrt-noexec", {"bootstrap": SHELL_RUNTIME})
    client.create_function(FunctionName="shellrt-noexec", Role=ROLE, Runtime="provided.al2023",
                           Handler="function.handler", Layers=[layer["LayerVersionArn"]],
                           Code={"ZipFile": zipped({"function.sh": SHELL_HANDLER})})
    answer = client.invoke(FunctionName="shellrt-noexec", Payload=b"{}")
    body = json.loads(answer["Payload"].read())
    assert answer["FunctionError"] == "Unhandled" and body["errorType"] == "Runtime.InvalidEntrypoint"
    assert "/opt/bootstrap" in body["errorMessage"], body


ORDER_USER = """\
import first, second, same

def handler(event, context):
    return [first.X, second.X, same.X]
"""


def test_a_later_layer_wins_and_a_change_of_layers_restarts_the_workers(client) -> None:  # type: ignore[no-untyped-def]
    a = publish_layer(client, "order-a", {"python/first.py": "X = 'a'\n",
                                          "python/same.py": "X = 'from a'\n"})
    b = publish_layer(client, "order-b", {"python/second.py": "X = 'b'\n",
                                          "python/same.py": "X = 'from b'\n"})
    create(client, "ordered", {"app.py": ORDER_USER}, [a["LayerVersionArn"], b["LayerVersionArn"]])
    assert call(client, "ordered") == ["a", "b", "from b"]
    client.update_function_configuration(FunctionName="ordered",
                                         Layers=[b["LayerVersionArn"], a["LayerVersionArn"]])
    assert call(client, "ordered") == ["a", "b", "from a"]


WRITER = """\
import errno, os

def handler(event, context):
    out = {}
    for path in ("/opt/python/ro.py", "/opt/python/new.py"):
        try:
            with open(path, "a") as f:
                f.write("x")
            out[path] = "written"
        except OSError as e:
            out[path] = errno.errorcode[e.errno]
    try:
        os.unlink("/opt/python/ro.py")
        out["unlink"] = "removed"
    except OSError as e:
        out["unlink"] = errno.errorcode[e.errno]
    out["read-only mount"] = bool(os.statvfs("/opt/python").f_flag & os.ST_RDONLY)
    return out
"""


def test_layer_content_is_read_only_in_the_sandbox(client) -> None:  # type: ignore[no-untyped-def]
    layer = publish_layer(client, "rolib", {"python/ro.py": "X = 1\n"})
    create(client, "writer", {"app.py": WRITER}, [layer["LayerVersionArn"]])
    # The file is the daemon's and not writable by others as well; the mount is what holds.
    assert call(client, "writer") == {"/opt/python/ro.py": "EACCES", "/opt/python/new.py": "EROFS",
                                      "unlink": "EROFS", "read-only mount": True}


USER_V1 = "import kept\n\ndef handler(event, context):\n    return kept.X\n"


def test_a_deleted_version_keeps_working_for_its_users(client) -> None:  # type: ignore[no-untyped-def]
    layer = publish_layer(client, "doomed", {"python/kept.py": "X = 'still here'\n"})
    arn = layer["LayerVersionArn"]
    create(client, "keeper", {"app.py": USER_V1}, [arn])
    assert call(client, "keeper") == "still here"
    client.delete_layer_version(LayerName="doomed", VersionNumber=1)
    client.delete_layer_version(LayerName="doomed", VersionNumber=1)  # again: still 204
    with pytest.raises(ClientError) as caught:
        client.get_layer_version(LayerName="doomed", VersionNumber=1)
    assert error_of(caught) == (404, "ResourceNotFoundException",
                                "The resource you requested does not exist.")
    assert client.list_layer_versions(LayerName="doomed")["LayerVersions"] == []
    # New code means new workers: they still get the deleted version's content.
    client.update_function_code(FunctionName="keeper", ZipFile=zipped({"app.py": USER_V1 + "# 2\n"}))
    assert call(client, "keeper") == "still here"
    assert client.get_function_configuration(FunctionName="keeper")["Layers"][0]["Arn"] == arn
    with pytest.raises(ClientError) as caught:
        create(client, "latecomer", {"app.py": USER_V1}, [arn])
    assert error_of(caught) == (400, "InvalidParameterValueException",
                                f"Layer version {arn} does not exist.")
    again = publish_layer(client, "doomed", {"python/kept.py": "X = 'new'\n"})
    assert again["Version"] == 2  # a number is never given twice


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("layers", "words"), [
    ([ARN.format("nosuch", 1)], f"Layer version {ARN.format('nosuch', 1)} does not exist."),
    ([f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:pylib:1"], "does not exist."),
    ([ARN.format(f"l{i}", 1) for i in range(6)], "Cannot reference more than 5 layers."),
    (["pylib"], "is not a layer version ARN"),
])
def test_create_refuses_unusable_layers(client, layers: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as caught:
        create(client, "refused", {"app.py": USER_V1}, layers)
    status, code, message = error_of(caught)
    assert (status, code) == (400, "InvalidParameterValueException") and words in message, message
    assert "refused" not in {f["FunctionName"] for f in client.list_functions()["Functions"]}


def test_update_refuses_an_unknown_layer_and_keeps_the_old_ones(client) -> None:  # type: ignore[no-untyped-def]
    layer = publish_layer(client, "steady", {"python/kept.py": "X = 'steady'\n"})
    create(client, "steadyuser", {"app.py": USER_V1}, [layer["LayerVersionArn"]])
    with pytest.raises(ClientError) as caught:
        client.update_function_configuration(FunctionName="steadyuser",
                                             Layers=[ARN.format("steady", 99)])
    assert error_of(caught)[:2] == (400, "InvalidParameterValueException")
    assert call(client, "steadyuser") == "steady"


def bad_zip(kind: str) -> bytes:
    if kind == "slip":
        return zipped({"../evil.py": "x"})
    if kind == "empty":
        return zipped({})
    return b"PK\x03\x04 not really a zip"


@pytest.mark.parametrize(("kind", "words"), [
    ("slip", 'entry "../evil.py" escapes'),
    ("empty", "is empty"),
    ("garbage", "not a valid zip archive"),
])
def test_publish_refuses_a_bad_zip(client, daemon: Daemon, kind: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ClientError) as caught:
        client.publish_layer_version(LayerName="badzip", Content={"ZipFile": bad_zip(kind)})
    status, code, message = error_of(caught)
    assert (status, code) == (400, "InvalidParameterValueException") and words in message, message
    assert client.list_layer_versions(LayerName="badzip")["LayerVersions"] == []
    staging = daemon.folder / "var" / "layers" / "badzip" / ".unpacked"
    assert not staging.exists() or list(staging.iterdir()) == []


@pytest.mark.parametrize(("extra", "words"), [
    ({"Content": {"S3Bucket": "b", "S3Key": "k"}}, "only Content.ZipFile"),
    ({"Content": {"ZipFile": "not base64!"}}, "not valid base64"),
    ({"CompatibleArchitectures": ["sparc"]}, "CompatibleArchitectures"),
    ({"Description": "x" * 257}, "Description"),
    ({"Colour": "blue"}, "Unknown parameter(s): Colour"),
])
def test_publish_refuses_bad_settings(daemon: Daemon, extra: dict[str, object], words: str) -> None:
    # Sent as they are: boto3 would refuse some of these itself, or encode the zip for us.
    body = {"Content": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="}, **extra}
    r = daemon.request("POST", "/2018-10-31/layers/odd/versions", json.dumps(body).encode(), BEARER)
    assert r.status == 400 and words in r.json()["message"], r  # type: ignore[index]
    assert r.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"


def test_get_refuses_bad_names_and_numbers(client) -> None:  # type: ignore[no-untyped-def]
    for name, number in (("bad name", 1), ("pylib", 123456789)):
        with pytest.raises(ClientError) as caught:
            client.get_layer_version(LayerName=name, VersionNumber=number)
        assert error_of(caught)[0] == (400 if " " in name else 404)
    with pytest.raises(ClientError) as caught:
        client.get_layer_version_by_arn(Arn=ARN.format("pylib", 1).rpartition(":")[0])
    assert error_of(caught)[:2] == (400, "InvalidParameterValueException")


def test_code_and_layers_together_are_held_to_250_mb(client) -> None:  # type: ignore[no-untyped-def]
    big = {"python/zeros.bin": "\0" * (126 << 20)}
    first = publish_layer(client, "big-a", big)["LayerVersionArn"]
    second = publish_layer(client, "big-b", big)["LayerVersionArn"]
    create(client, "bigone", {"app.py": USER_V1}, [first])
    with pytest.raises(ClientError) as caught:
        client.update_function_configuration(FunctionName="bigone", Layers=[first, second])
    status, code, message = error_of(caught)
    assert (status, code) == (400, "InvalidParameterValueException")
    assert message.startswith("Function code combined with layers exceeds the maximum allowed "
                              "size of 262144000 bytes. The actual size is 2642"), message
    for version in (first, second):
        client.delete_layer_version(LayerName=version.split(":")[-2], VersionNumber=1)


# --- listing -------------------------------------------------------------------------------------


def test_list_layers_and_versions_with_filters_and_pages(client) -> None:  # type: ignore[no-untyped-def]
    for runtimes in (["python3.12"], ["nodejs20.x"], ["python3.12", "nodejs20.x"]):
        publish_layer(client, "paged", {"python/p.py": ""}, CompatibleRuntimes=runtimes)
    page = client.list_layer_versions(LayerName="paged", MaxItems=2)
    assert [v["Version"] for v in page["LayerVersions"]] == [3, 2]
    rest = client.list_layer_versions(LayerName="paged", Marker=page["NextMarker"])
    assert [v["Version"] for v in rest["LayerVersions"]] == [1] and "NextMarker" not in rest
    python = client.list_layer_versions(LayerName="paged", CompatibleRuntime="python3.12")
    assert [v["Version"] for v in python["LayerVersions"]] == [3, 1]
    layers = {item["LayerName"]: item for page in client.get_paginator("list_layers").paginate(
        PaginationConfig={"PageSize": 1}) for item in page["Layers"]}
    assert layers["paged"]["LatestMatchingVersion"]["Version"] == 3
    assert layers["paged"]["LayerArn"] == ARN.format("paged", 1).rpartition(":")[0]
    node = client.list_layers(CompatibleRuntime="nodejs20.x")["Layers"]
    assert [(i["LayerName"], i["LatestMatchingVersion"]["Version"]) for i in node] == [("paged", 3)]
    client.delete_layer_version(LayerName="paged", VersionNumber=3)
    node = client.list_layers(CompatibleRuntime="nodejs20.x")["Layers"]
    assert [(i["LayerName"], i["LatestMatchingVersion"]["Version"]) for i in node] == [("paged", 2)]
    by_arn = client.get_layer_version_by_arn(Arn=ARN.format("paged", 2))
    assert by_arn["Version"] == 2 and by_arn["CompatibleRuntimes"] == ["nodejs20.x"]
    by_layer_arn = client.get_layer_version(LayerName=by_arn["LayerArn"], VersionNumber=1)
    assert by_layer_arn["LayerVersionArn"] == ARN.format("paged", 1)
    assert client.list_layer_versions(LayerName="never-published")["LayerVersions"] == []


# --- the AWS CLI, as the README's new user ---------------------------------------------------------


def test_aws_cli_publishes_a_layer_a_function_uses(daemon: Daemon, tmp_path: Path) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDHEADWATER", "AWS_SECRET_ACCESS_KEY": "s3cret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}

    def aws(*args: str) -> dict[str, object]:
        result = subprocess.run([str(AWS_CLI), "lambda", *args, "--endpoint-url", daemon.url],
                                capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else {}

    (tmp_path / "layer.zip").write_bytes(zipped({"python/clilib.py": "WHO = 'the AWS CLI'\n"}))
    (tmp_path / "code.zip").write_bytes(zipped({
        "app.py": "import clilib\n\ndef handler(event, context):\n    return clilib.WHO\n"}))
    layer = aws("publish-layer-version", "--layer-name", "clilayer", "--zip-file",
                f"fileb://{tmp_path / 'layer.zip'}", "--compatible-runtimes", RUNTIME)
    assert layer["Version"] == 1
    listed = aws("list-layers", "--compatible-runtime", RUNTIME)["Layers"]
    assert "clilayer" in {item["LayerName"] for item in listed}  # type: ignore[union-attr]
    aws("create-function", "--function-name", "cliuser", "--runtime", RUNTIME, "--role", ROLE,
        "--handler", "app.handler", "--zip-file", f"fileb://{tmp_path / 'code.zip'}",
        "--layers", str(layer["LayerVersionArn"]))
    aws("invoke", "--function-name", "cliuser", str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text()) == "the AWS CLI"
    aws("delete-layer-version", "--layer-name", "clilayer", "--version-number", "1")
    assert aws("list-layer-versions", "--layer-name", "clilayer")["LayerVersions"] == []


# --- across a restart, and in config.toml ----------------------------------------------------------


def test_layers_survive_a_restart_and_serve_config_functions(make_daemon) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon("", server=SERVER)
    client = lambda_client(first)
    used = publish_layer(client, "kept", {"python/kept.py": "X = 'restarted'\n"})["LayerVersionArn"]
    publish_layer(client, "kept", {"python/kept.py": "X = 'unused'\n"})
    create(client, "apiuser", {"app.py": USER_V1}, [used])
    client.delete_layer_version(LayerName="kept", VersionNumber=1)  # used: its content stays
    client.delete_layer_version(LayerName="kept", VersionNumber=2)  # unused: gone now
    layers = first.folder / "var" / "layers" / "kept"
    assert (layers / "1").is_dir() and not (layers / "2").exists()
    assert first.stop() == 0
    (first.folder / "fromfile").mkdir()
    (first.folder / "fromfile" / "app.py").write_text(USER_V1)
    config = first.config_path.read_text() + function_toml("fileuser", "app.handler",
                                                           code="fromfile", layers=[used])
    second = Daemon(first.folder, config).start()
    try:
        again = lambda_client(second)
        assert call(again, "apiuser") == "restarted"
        assert call(again, "fileuser") == "restarted"
        assert publish_layer(again, "kept", {"python/kept.py": ""})["Version"] == 3
    finally:
        second.stop()


def test_a_config_file_naming_an_unpublished_layer_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "config.toml").write_text(
        function_toml("f", "app.handler", code="code", layers=[ARN.format("ghost", 1)]))
    result = subprocess.run([sys.executable, "-m", "router", "serve", "--config",
                             str(tmp_path / "config.toml")], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"functions[0].layers: layer version {ARN.format('ghost', 1)} does not exist" in result.stderr


# --- tables --------------------------------------------------------------------------------------


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if text.startswith("->"):
            (root / name).symlink_to(text[2:])
        else:
            (root / name).write_text(text)
    return root


def contents(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "->" + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_text()
    return out


@pytest.mark.parametrize(("layers", "merged"), [
    ([{"a": "1", "d/x": "1"}, {"a": "2", "d/y": "2"}], {"a": "2", "d/x": "1", "d/y": "2"}),
    # A file replaces a folder and a folder a file, whole.
    ([{"d/x": "1"}, {"d": "file"}], {"d": "file"}),
    ([{"d": "file"}, {"d/x": "2"}], {"d/x": "2"}),
    # A link is copied as a link; a later folder at its place replaces it.
    ([{"real/x": "1", "link": "->real"}], {"link": "->real", "real/x": "1"}),
    ([{"link": "->real"}, {"link/x": "2"}], {"link/x": "2"}),
    ([{"a": "1"}, {"b": "2"}, {"a": "3"}], {"a": "3", "b": "2"}),
])
def test_merge_lays_later_layers_over_earlier_ones(tmp_path: Path, layers: list[dict[str, str]],
                                                   merged: dict[str, str]) -> None:
    sources = [tree(tmp_path / f"l{i}", files) for i, files in enumerate(layers)]
    merge(sources, tmp_path / "opt")
    assert contents(tmp_path / "opt") == merged
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".staging")] == []


def test_merge_never_writes_through_an_earlier_layers_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    first = tree(tmp_path / "l0", {"d": f"->{outside}"})
    second = tree(tmp_path / "l1", {"d/evil": "x"})
    merge([first, second], tmp_path / "opt")
    assert list(outside.iterdir()) == []
    assert contents(tmp_path / "opt") == {"d/evil": "x"}


def test_opt_folder_is_the_layer_itself_or_a_merge_keyed_by_the_list() -> None:
    one, two = ARN.format("a", 1), ARN.format("b", 3)
    assert opt_folder("/d", []) == ""
    assert opt_folder("/d", [one]) == "/d/layers/a/1"
    assert opt_folder("/d", [one, two]).startswith("/d/layers/.merged/")
    assert opt_folder("/d", [one, two]) != opt_folder("/d", [two, one])


@pytest.mark.parametrize(("arns", "problem"), [
    ([], None),
    ([ARN.format("a", 1), ARN.format("b", 2)], None),
    ([ARN.format(f"x{i}", 1) for i in range(6)], "Cannot reference more than 5 layers."),
    ([ARN.format("a", 1), ARN.format("a", 2)], "Two different versions of the same layer"),
    (["arn:aws:lambda:us-east-1:999999999999:layer:a:1"], "does not exist."),
    ([ARN.format("a", 1).rpartition(":")[0]], "is not a layer version ARN"),
])
def test_layers_problem(arns: list[str], problem: str | None) -> None:
    found = layers_problem(arns, "us-east-1", ACCOUNT)
    assert (found is None) if problem is None else (found is not None and problem in found)


PY = Launcher("python3.12", "/py", (), layer_paths={
    "PYTHONPATH": ("python/lib/python3.12/site-packages", "python")})


@pytest.mark.parametrize(("env", "launcher", "want"), [
    ({"PATH": "/usr/bin"}, PY, {
        "PATH": "/usr/bin:/opt/bin", "LD_LIBRARY_PATH": "/opt/lib",
        "PYTHONPATH": "/opt/python/lib/python3.12/site-packages:/opt/python"}),
    # What the function sets comes first.
    ({"PATH": "/usr/bin", "PYTHONPATH": "/var/task/vendor", "LD_LIBRARY_PATH": "/x"}, PY, {
        "PATH": "/usr/bin:/opt/bin", "LD_LIBRARY_PATH": "/x:/opt/lib",
        "PYTHONPATH": "/var/task/vendor:/opt/python/lib/python3.12/site-packages:/opt/python"}),
    ({"PATH": "/bin"}, Launcher("nodejs20.x", "/py", (), layer_paths={
        "NODE_PATH": ("nodejs/node20/node_modules", "nodejs/node_modules")}), {
        "PATH": "/bin:/opt/bin", "LD_LIBRARY_PATH": "/opt/lib",
        "NODE_PATH": "/opt/nodejs/node20/node_modules:/opt/nodejs/node_modules"}),
    ({"PATH": "/bin"}, Launcher("provided", "/py", ()), {
        "PATH": "/bin:/opt/bin", "LD_LIBRARY_PATH": "/opt/lib"}),
])
def test_layer_env(env: dict[str, str], launcher: Launcher, want: dict[str, str]) -> None:
    assert layer_env(env, launcher, "/opt") == want


@pytest.mark.parametrize(("opt", "bound"), [("", False), ("/data/layers/a/1", True)])
def test_the_sandbox_binds_the_layers_read_only_at_opt(opt: str, bound: bool) -> None:
    sandbox = Sandbox(uid=None, code="/code", bootstrap="/b/bootstrap.py", runtime=(), tmp_mb=64,
                      network=Network("none"), opt=opt)
    args = argv(sandbox, ["true"], 3, None)
    binds = [args[i + 1:i + 3] for i, a in enumerate(args) if a == "--ro-bind"]
    assert ([opt, "/opt"] in binds) is bound
    assert not any(target == "/opt" for _, target in binds) or bound
