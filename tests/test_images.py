"""Container images (PackageType Image): pulled by skopeo from a docker-registry the suite starts
on loopback (one open, one behind htpasswd), from an OCI layout and from a docker-archive tarball,
unpacked by umoci, run sandboxed with the image's rootfs as the root. The images are built here
without docker (tests/image_builder.py), once per session."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import image_builder
import pytest
from conftest import Daemon, functions_table
from image_builder import PASSWORD, USER, start_registry

from router.store.images import (
    ImageError,
    ImageSettings,
    Overrides,
    Source,
    inside,
    launch,
    parse_reference,
    pinned,
    prepare_rootfs,
)
from workers.sandbox import HOST_DIR, Network, Sandbox, argv

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("skopeo", "umoci", "docker-registry")),
    reason="needs skopeo, umoci and docker-registry (apt-get install skopeo umoci docker-registry)")

# --- pure parts --------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "local", "expected"), [
    ("127.0.0.1:5000/hello:v1", False, Source("docker://127.0.0.1:5000/hello:v1", "127.0.0.1:5000")),
    ("127.0.0.1:5000/team/hello", False, Source("docker://127.0.0.1:5000/team/hello:latest",
                                                 "127.0.0.1:5000")),
    ("docker://localhost:5000/hello@sha256:" + "a" * 64, False,
     Source("docker://localhost:5000/hello@sha256:" + "a" * 64, "localhost:5000")),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/fn:latest", False,
     Source("docker://123456789012.dkr.ecr.us-east-1.amazonaws.com/fn:latest",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com")),
    ("library/python:3.12", False, Source("docker://library/python:3.12", "docker.io")),
    ("oci:/srv/layout:v1", True, Source("oci:/srv/layout:v1")),
    ("docker-archive:/srv/image.tar", True, Source("docker-archive:/srv/image.tar")),
])
def test_image_references(text: str, local: bool, expected: Source) -> None:
    assert parse_reference(text, local) == expected


@pytest.mark.parametrize(("text", "local", "message"), [
    ("oci:/srv/layout:v1", False, "config.toml only"),
    ("docker-archive:relative.tar", True, "must be absolute"),
    ("UPPER/case", False, "lower-case"),
    ("host:5000/x:bad tag", False, "is not an image reference"),
])
def test_bad_image_references(text: str, local: bool, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_reference(text, local)


@pytest.mark.parametrize(("transport", "expected"), [
    ("docker://127.0.0.1:5000/app:v1", "docker://127.0.0.1:5000/app@sha256:ab"),
    ("docker://127.0.0.1:5000/app@sha256:ff", "docker://127.0.0.1:5000/app@sha256:ab"),
    ("docker://registry.example/team/app:latest", "docker://registry.example/team/app@sha256:ab"),
    ("oci:/images/app:v1", "oci:/images/app:v1"),
])
def test_a_copy_is_pinned_to_the_manifest_inspected(transport: str, expected: str) -> None:
    assert pinned(Source(transport, "r"), "ab").transport == expected


IMAGE = ImageSettings("d", ["/lambda-entrypoint.sh"], ["app.handler"], "/var/task", {"A": "1"})


@pytest.mark.parametrize(("overrides", "argv", "cwd", "handler"), [
    (None, ("/lambda-entrypoint.sh", "app.handler"), "/var/task", "app.handler"),
    (Overrides(command=["app.other"]), ("/lambda-entrypoint.sh", "app.other"), "/var/task", "app.other"),
    (Overrides(entrypoint=["python3", "-m", "awslambdaric"]),
     ("python3", "-m", "awslambdaric", "app.handler"), "/var/task", "app.handler"),
    (Overrides(entrypoint=["/bin/run"], command=[], working_directory="/srv"), ("/bin/run",), "/srv", ""),
])
def test_image_config_overrides_the_images_own(overrides: Overrides | None, argv: tuple[str, ...],
                                                cwd: str, handler: str) -> None:
    run = launch(IMAGE, overrides)
    assert (run.argv, run.cwd, run.handler, run.env) == (argv, cwd, handler, {"A": "1"})


def test_an_image_with_nothing_to_run_is_refused() -> None:
    with pytest.raises(ImageError, match="no ENTRYPOINT or CMD"):
        launch(ImageSettings("d"), None)


def test_links_in_an_image_resolve_inside_it(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").write_text("")
    os.symlink("/usr/bin", root / "bin")  # absolute: the image's /usr/bin, not the host's
    os.symlink("../../etc/shadow", root / "usr/bin/escape")
    os.symlink("loop", root / "loop")
    assert inside(root, "/bin/python3") == root / "usr/bin/python3"
    assert inside(root, "/usr/bin/escape") == root / "etc/shadow"  # clamped at the image's root
    assert inside(root, "/../../../etc") == root / "etc"
    assert inside(root, "/loop") is None


def test_a_rootfs_is_made_safe_to_bind(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin/su").write_text("")
    (root / "bin/su").chmod(0o6755)
    os.symlink("/etc", root / "tmp")  # a mount point that leads out of the image
    (root / "proc").write_text("not a folder")
    prepare_rootfs(root)
    assert (root / "bin/su").stat().st_mode & 0o7777 == 0o755
    for name in ("tmp", "proc", "dev", ".headwater"):
        assert (root / name).is_dir() and not (root / name).is_symlink()
    assert (root / "etc/resolv.conf").read_text() == "" and (root / "etc/hosts").exists()


def test_an_images_sandbox_is_rooted_in_its_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/resolv.conf").write_text("")
    sandbox = Sandbox(uid=200001, code="", bootstrap="/h/bootstrap.py", runtime=("/opt/py",),
                      tmp_mb=512, network=Network("none"), files=("/lib/libc.so.6",),
                      root=str(tmp_path), cwd="/srv", setpriv=("/.headwater/ld.so", "/sp"))
    args = argv(sandbox, ["cmd"], 3, 4)
    at = args.index("--ro-bind")
    assert args[at:at + 3] == ["--ro-bind", str(tmp_path), "/"]
    assert "/usr" not in args  # nothing of the host's /usr
    for host in ("/opt/py", "/lib/libc.so.6", "/h/bootstrap.py"):
        i = args.index(HOST_DIR + host)
        assert args[i - 2:i] == ["--ro-bind", host]
    assert args[args.index("--remount-ro") + 1] == HOST_DIR
    assert args[args.index("--chdir") + 1] == "/srv"
    assert args[args.index("--") + 1:args.index("--") + 3] == ["/.headwater/ld.so", "/sp"]
    assert args[at + 3:at + 6] == ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]


# --- registries and images -----------------------------------------------------------------------


class Images:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shell_oci = image_builder.build("shell", folder / "shell", folder / "work")
        self.python_oci = image_builder.build("python", folder / "python", folder / "work")
        self.archive = image_builder.save(self.shell_oci, folder / "shell.tar", "shell:latest")


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Images, str, str]]:
    """The test images, and the open and the htpasswd registry they are pushed to; both
    registries are killed at the end of the session."""
    folder = tmp_path_factory.mktemp("images")
    started = []
    try:
        (folder / "open").mkdir()
        (folder / "auth").mkdir()
        proc, open_registry = start_registry(folder / "open", auth=False)
        started.append(proc)
        proc, auth_registry = start_registry(folder / "auth", auth=True)
        started.append(proc)
        built = Images(folder)
        image_builder.push(built.python_oci, open_registry, "python:latest")
        image_builder.push(built.shell_oci, open_registry, "shell:latest")
        image_builder.push(built.shell_oci, auth_registry, "private/shell:v1", f"{USER}:{PASSWORD}")
        yield built, open_registry, auth_registry
    finally:
        for proc in started:
            proc.kill()
            proc.wait(5)


def corrupt_copy(oci: str, folder: Path) -> str:
    """A copy of an OCI layout as another image (its own manifest: one whose manifest is cached
    was checked when it was copied) whose largest blob, its layer, has one byte changed."""
    layout = Path(oci.removeprefix("oci:").rsplit(":", 1)[0])
    shutil.copytree(layout, folder)
    image_builder.run("umoci", "config", "--no-history", "--image", f"{folder}:latest",
                      "--config.env", "CORRUPTED=yes")
    blob = max((folder / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    return f"oci:{folder}:latest"


def image_toml(name: str, image: str, **options: object) -> str:
    return functions_table({"name": name, "image": image, **options})


@pytest.fixture(scope="module")
def daemon(make_daemon, images, tmp_path_factory) -> Daemon:  # type: ignore[no-untyped-def]
    built, open_registry, auth_registry = images
    corrupt = corrupt_copy(built.shell_oci, tmp_path_factory.mktemp("corrupt") / "layout")
    auth_host = auth_registry.replace("127.0.0.1", "localhost")
    server = "\n".join([
        f'[images.registries."{open_registry}"]', "tls_verify = false",
        f'[images.registries."{auth_registry}"]', "tls_verify = false",
        f'username = "{USER}"', f'password = "{PASSWORD}"',
        f'[images.registries."{auth_host}"]', "tls_verify = false"])
    functions = "".join([
        image_toml("py", f"{open_registry}/python:latest", env={"TIER": "gold"}),
        image_toml("py-twin", f"{open_registry}/python:latest"),
        image_toml("py-other", f"{open_registry}/python:latest",
                   image_config={"command": ["app.other"]}),
        image_toml("shell-oci", built.shell_oci, env={"GREETING": "from the function"}),
        image_toml("shell-archive", built.archive),
        image_toml("shell-overridden", built.shell_oci, image_config={
            "entrypoint": ["/bin/sh", "/var/task/bootstrap"], "command": ["custom.handler"],
            "working_directory": "/"}),
        image_toml("shell-private", f"{auth_registry}/private/shell:v1"),
        image_toml("shell-limits", built.shell_oci, timeout_s=1),
        image_toml("corrupt", corrupt),
    ])
    # [images] is a table of its own: it goes after [server]'s keys, before the functions.
    return make_daemon(functions, server=f"\n{server}\n", env={**os.environ})


def invoke(daemon: Daemon, name: str, event: object) -> dict:
    r = daemon.invoke(name, event)
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    body = r.json()
    assert isinstance(body, dict)
    return body


def cache(daemon: Daemon) -> set[str]:
    """The names in the image cache: its unpacked images' folders, and what is being unpacked."""
    return {p.name for p in (daemon.folder / "var/images").iterdir() if p.is_dir()}


def test_an_image_built_like_awss_base_images_runs_from_the_registry(daemon: Daemon) -> None:
    r = daemon.invoke("py", {"hello": "image"})
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    body = r.json()
    assert isinstance(body, dict)
    # awslambdaric, started by the image's ENTRYPOINT with its CMD as the handler, in WORKDIR,
    # with the image's ENV under the function's own.
    assert body["event"] == {"hello": "image"}
    assert body["request_id"] == r.headers["x-amzn-RequestId"]
    assert (body["cwd"], body["function_name"], body["from_image"], body["tier"]) == \
        ("/var/task", "py", "python", "gold")
    record = daemon.record(body["request_id"])
    assert record["outcome"] == "success" and record["cold"] is True
    daemon.wait_for_line(f"REPORT RequestId: {body['request_id']}")


def test_image_config_overrides_command_entrypoint_and_working_directory(daemon: Daemon) -> None:
    r = daemon.invoke("py-other", {})
    assert r.status == 200 and r.json() == "other handler", r
    body = invoke(daemon, "shell-overridden", {"n": 1})
    assert (body["handler"], body["cwd"]) == ("custom.handler", "/")


@pytest.mark.parametrize("name", ["shell-oci", "shell-archive", "shell-private"])
def test_a_shell_image_runs_from_a_layout_an_archive_and_a_private_registry(
        daemon: Daemon, name: str) -> None:
    body = invoke(daemon, name, {"from": name})
    assert body["event"] == {"from": name}
    assert (body["handler"], body["cwd"], body["from_image"], body["marker"]) == \
        ("function.handler", "/var/task", "shell", "from the image")
    # The function's env wins over the image's ENV.
    assert body["greeting"] == ("from the function" if name == "shell-oci" else "from the image")


def test_registry_credentials_are_never_shown(daemon: Daemon) -> None:
    r = daemon.request("GET", "/2015-03-31/functions/shell-private")
    assert r.status == 200 and PASSWORD.encode() not in r.body, r
    assert not any(PASSWORD in line for line in daemon.lines)
    code = r.json()["Code"]  # type: ignore[index]
    assert code["ImageUri"].endswith("/private/shell:v1")
    assert r.json()["Configuration"]["PackageType"] == "Image"  # type: ignore[index]


def test_functions_of_one_image_share_its_rootfs(daemon: Daemon) -> None:
    first = daemon.request("GET", "/2015-03-31/functions/py").json()
    twin = daemon.request("GET", "/2015-03-31/functions/py-twin").json()
    assert first["Configuration"]["CodeSha256"] == twin["Configuration"]["CodeSha256"]  # type: ignore[index]
    digest = first["Configuration"]["CodeSha256"]  # type: ignore[index]
    assert first["Code"]["ResolvedImageUri"].endswith(f"/python@sha256:{digest}")  # type: ignore[index]
    assert invoke(daemon, "py-twin", {})["function_name"] == "py-twin"
    # One unpacked tree per image (per manifest): the shell image is one for the functions of
    # its layout and of the private registry, whose manifest is the same bytes; the archive's
    # is another (docker save writes its own manifest).
    digests = {daemon.request("GET", f"/2015-03-31/functions/{name}").json()[  # type: ignore[index]
        "Configuration"]["CodeSha256"] for name in ("py", "py-other", "shell-oci", "shell-private",
                                                    "shell-overridden", "shell-archive")}
    assert len(digests) == 3 and cache(daemon) == digests


def test_timeouts_and_crashes_hold_for_an_image_function(daemon: Daemon) -> None:
    r = daemon.invoke("shell-limits", "spin")
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled", r
    assert r.json()["errorType"] == "Sandbox.Timedout"  # type: ignore[index]
    assert daemon.record(r.headers["x-amzn-RequestId"])["outcome"] == "timeout"
    r = daemon.invoke("shell-limits", "exit")
    assert r.json()["errorType"] == "Runtime.ExitError", r  # type: ignore[index]
    assert daemon.record(r.headers["x-amzn-RequestId"])["outcome"] == "crash"
    assert invoke(daemon, "shell-limits", {"again": 1})["event"] == {"again": 1}  # a fresh worker


def test_the_rootfs_is_read_only_and_the_host_is_not_there(daemon: Daemon) -> None:
    assert invoke(daemon, "py", {"probe": "write"}) == {"wrote": False, "error": "OSError"}
    body = invoke(daemon, "py", {"probe": "host"})
    assert not any(body["seen"][p] for p in ("/etc/shadow", "/work", "/usr/bin/bwrap"))
    assert body["root"] == [".headwater", "dev", "etc", "lib64", "proc", "root", "tmp", "usr", "var"]
    assert str(daemon.folder) not in json.dumps(body)
    assert invoke(daemon, "shell-oci", {})["shadow"] == "no"


def test_a_corrupt_layer_fails_the_function_and_leaves_nothing(daemon: Daemon) -> None:
    line = daemon.wait_for_line("corrupt: image")
    assert "digest" in line.lower() or "corrupt" in line.lower(), line
    r = daemon.invoke("corrupt", {})
    assert r.status == 409 and r.headers["x-amzn-ErrorType"].startswith(
        "CodeArtifactUserFailedException"), r
    config = daemon.request("GET", "/2015-03-31/functions/corrupt/configuration").json()
    assert config["State"] == "Failed" and config["StateReasonCode"] == "InvalidImage"  # type: ignore[index]
    assert not any(name.startswith(".staging") for name in cache(daemon))


def aws(daemon: Daemon, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    done = subprocess.run(["aws", "lambda", *args, "--endpoint-url", daemon.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert (done.returncode == 0) == ok, done.stderr
    return done


def test_the_aws_cli_creates_an_image_function_and_invokes_it(daemon: Daemon, images,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    _, registry, _ = images
    created = json.loads(aws(daemon, "create-function", "--function-name", "cli-image",
                             "--package-type", "Image", "--code", f"ImageUri={registry}/shell:latest",
                             "--image-config", "Command=cli.handler",
                             "--role", "arn:aws:iam::123456789012:role/x").stdout)
    assert created["PackageType"] == "Image" and "Runtime" not in created
    assert created["ImageConfigResponse"] == {"ImageConfig": {"Command": ["cli.handler"]}}
    assert len(created["CodeSha256"]) == 64
    out = tmp_path / "out.json"
    v2 = ["--cli-binary-format", "raw-in-base64-out"] if "aws-cli/2" in subprocess.run(
        ["aws", "--version"], capture_output=True, text=True).stdout else []
    result = json.loads(aws(daemon, "invoke", "--function-name", "cli-image", *v2,
                            "--payload", '{"k": 1}', str(out)).stdout)
    assert result["StatusCode"] == 200 and "FunctionError" not in result, result
    body = json.loads(out.read_text())
    assert (body["event"], body["handler"]) == ({"k": 1}, "cli.handler")
    # A new tag of the same image is the same digest: no second tree.
    updated = json.loads(aws(daemon, "update-function-code", "--function-name", "cli-image",
                             "--image-uri", f"{registry}/shell:latest").stdout)
    assert updated["CodeSha256"] == created["CodeSha256"]
    # Settings change without a registry (an empty Layers, as tools send it, is no layer), and
    # the entry point is checked against the cached image.
    settings = json.loads(aws(daemon, "update-function-configuration", "--function-name",
                              "cli-image", "--layers", "[]", "--environment",
                              "Variables={COLOUR=blue}").stdout)
    assert settings["Environment"]["Variables"] == {"COLOUR": "blue"}
    refused = aws(daemon, "update-function-configuration", "--function-name", "cli-image",
                  "--image-config", "EntryPoint=/no/such/entrypoint", ok=False)
    assert "Couldn't find valid entrypoint" in refused.stderr


@pytest.mark.parametrize(("uri", "config", "message"), [
    ("{open}/no-such-repo:latest", None, "not found"),
    ("{auth_host}/private/shell:v1", None, "access denied"),
    ("{open}/shell:latest", {"EntryPoint": ["/no/such/entrypoint"]},
     "Couldn't find valid entrypoint: [/no/such/entrypoint]"),
    ("{open}/shell:latest", {"WorkingDirectory": "/missing"}, "no such folder in the image"),
    ("oci:/etc:latest", None, "config.toml only"),
])
def test_an_image_that_cannot_be_had_fails_create_function_and_leaves_nothing(
        daemon: Daemon, images, uri: str, config: dict | None, message: str) -> None:  # type: ignore[no-untyped-def]
    _, open_registry, auth_registry = images
    uri = uri.format(open=open_registry, auth_host=auth_registry.replace("127.0.0.1", "localhost"))
    before = cache(daemon)
    body = {"FunctionName": "bad-image", "PackageType": "Image", "Role": "arn:aws:iam::1:role/x",
            "Code": {"ImageUri": uri}, **({"ImageConfig": config} if config else {})}
    r = daemon.request("POST", "/2015-03-31/functions", json.dumps(body).encode(),
                       {"Content-Type": "application/json"})
    assert r.status == 400 and r.headers["x-amzn-ErrorType"].startswith(
        "InvalidParameterValueException"), r
    assert message in r.json()["message"], r  # type: ignore[index]
    assert cache(daemon) == before
    assert daemon.request("GET", "/2015-03-31/functions/bad-image").status == 404


def test_a_registry_gone_at_a_restart_leaves_the_function_its_cached_image(
        make_daemon, images, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    built, _, _ = images
    (tmp_path / "registry").mkdir()
    proc, registry = start_registry(tmp_path / "registry", auth=False)
    try:
        image_builder.push(built.shell_oci, registry, "shell:latest")
        first = make_daemon(image_toml("kept", f"{registry}/shell:latest"),
                            server=f'\n[images.registries."{registry}"]\ntls_verify = false\n',
                            env={**os.environ})
        assert invoke(first, "kept", {"n": 1})["event"] == {"n": 1}
        assert first.stop() == 0
    finally:
        proc.kill()
        proc.wait(5)
    again = Daemon(first.folder, first.config_path.read_text(), env={**os.environ}).start(60)
    try:
        assert invoke(again, "kept", {"n": 2})["event"] == {"n": 2}
        again.wait_for_line("keeps the one it named last")
    finally:
        again.stop()
