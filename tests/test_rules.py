"""The pure rules behind a hardened surface, as tables: auth modes and their config errors, what
deploy packages, which API parameters are refused, the log rate limit, the daemon's address."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from conftest import Daemon, function_toml

from router import daemonfile
from router.api import management
from router.api.httplog import RateLimit, short
from router.cli import main as cli
from router.config import ConfigError, ServerConfig, effective_auth, parse

RUNTIME = f"python3.{sys.version_info.minor}"
KEYS = {"access_keys": {"AKID": "s"}}
TOKENS = {"tokens": ["t"]}


@pytest.mark.parametrize(("mode", "server", "expected"), [
    ("auto", {}, "none"),
    ("auto", TOKENS, "api"),
    ("auto", KEYS, "api"),
    ("auto", {"auth": "none", **TOKENS}, "none"),  # the API itself is open: so is "auto"
    ("none", KEYS, "none"),
    ("token", TOKENS, "token"),
    ("aws_iam", KEYS, "aws_iam"),
])
def test_effective_auth(mode: str, server: dict[str, object], expected: str) -> None:
    assert effective_auth(mode, ServerConfig(**server)) == expected  # type: ignore[arg-type]


def config_with(tmp_path: Path, server: dict[str, object], **function: object) -> dict[str, object]:
    (tmp_path / "code").mkdir(exist_ok=True)
    fn = {"name": "f", "handler": "app.handler", "code": "code", "runtime": RUNTIME, **function}
    return {"server": server, "functions": [fn]}


@pytest.mark.parametrize(("server", "function", "message"), [
    ({}, {"url": {"auth": "token"}}, 'functions[0].url.auth: auth = "token" needs [server].tokens'),
    (TOKENS, {"url": {"auth": "aws_iam"}},
     'functions[0].url.auth: auth = "aws_iam" needs [server].access_keys'),
    ({}, {"triggers": [{"type": "http", "route": "GET /x", "auth": "token"}]},
     'functions[0].triggers[0].auth: auth = "token" needs [server].tokens'),
    (TOKENS, {"url": {"auth": "none"}, "triggers": [{"type": "http", "route": "GET /x"}]},
     "functions[0].url.auth: the function URL would be open while route 'GET /x' needs "
     "credentials; give the URL an auth too, or url = { enabled = false }"),
    ({}, {"url": {"auth": "sometimes"}},
     'functions[0].url.auth: expected "auto", "none", "token" or "aws_iam", got "sometimes"'),
    ({}, {"env": {"AWS_REGION": "x", "LAMBDA_TASK_ROOT": "/", "OK": "1"}},
     "functions[0].env: AWS_REGION, LAMBDA_TASK_ROOT: reserved by Lambda, cannot be set"),
    ({"metrics_listen": "nowhere"}, {},
     'server.metrics_listen: expected HOST:PORT, got "nowhere"'),
])
def test_auth_and_env_config_errors(tmp_path: Path, server: dict[str, object],
                                    function: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(config_with(tmp_path, server, **function), tmp_path, {})
    assert str(caught.value) == message


@pytest.mark.parametrize(("server", "function"), [
    (TOKENS, {"url": {"auth": "none"}, "triggers": [{"type": "http", "route": "GET /x",
                                                     "auth": "none"}]}),
    (TOKENS, {"url": {"enabled": False, "auth": "none"},
              "triggers": [{"type": "http", "route": "GET /x", "auth": "token"}]}),
    (TOKENS, {"triggers": [{"type": "http", "route": "GET /x", "auth": "token"}]}),
    ({}, {"url": {"auth": "none", "cors": {"allow_origins": ["*"], "max_age": 60}}}),
])
def test_auth_configs_accepted(tmp_path: Path, server: dict[str, object],
                               function: dict[str, object]) -> None:
    parse(config_with(tmp_path, server, **function), tmp_path, {})


@pytest.mark.parametrize(("rel", "is_dir", "patterns", "expected"), [
    (".git", True, cli.ALWAYS_IGNORED, True),
    ("sub/.git", True, cli.ALWAYS_IGNORED, True),
    ("pkg/__pycache__", True, cli.ALWAYS_IGNORED, True),
    (".env", False, cli.ALWAYS_IGNORED, True),
    (".env.local", False, cli.ALWAYS_IGNORED, True),
    (".envrc", False, cli.ALWAYS_IGNORED, False),
    (".venv", True, cli.ALWAYS_IGNORED, True),
    ("app.py", False, cli.ALWAYS_IGNORED, False),
    ("env.py", False, cli.ALWAYS_IGNORED, False),
    ("data/big.csv", False, ["*.csv"], True),
    ("tests", True, ["tests/"], True),
    ("tests", False, ["tests/"], False),  # a trailing / matches folders only
    ("sub/tests", True, ["/tests"], False),  # a leading / anchors at the folder
    ("tests", True, ["/tests"], True),
    ("docs/a/b.md", False, ["docs/*"], True),
])
def test_ignored(rel: str, is_dir: bool, patterns: list[str], expected: bool) -> None:
    assert cli.ignored(rel, is_dir, patterns) is expected


def test_read_ignore_skips_comments_and_blanks() -> None:
    assert cli.read_ignore("# notes\n\n*.csv\n  build/  \n") == ["*.csv", "build/"]


@pytest.mark.parametrize(("body", "message"), [
    ({"FunctionName": "f"}, None),
    ({"Architectures": ["x86_64"], "Publish": False, "Layers": []}, None),
    ({"TracingConfig": {"Mode": "PassThrough"}, "EphemeralStorage": {"Size": 512}}, None),
    ({"VpcConfig": {"SubnetIds": [], "SecurityGroupIds": []}}, None),
    ({"FileSystemConfigs": [{"Arn": "arn"}]}, "Not supported by Headwater: FileSystemConfigs"),
    ({"Architectures": ["arm64"], "SnapStart": {"ApplyOn": "PublishedVersions"}},
     "Not supported by Headwater: Architectures, SnapStart"),
    ({"KMSKeyArn": "arn:aws:kms:x"}, "Not supported by Headwater: KMSKeyArn"),
    ({"Colour": "blue"}, "Unknown parameter(s): Colour"),
])
def test_refuse_unimplemented(body: dict[str, object], message: str | None) -> None:
    if message is None:
        management.refuse_unimplemented(body, management.CREATE_PARAMETERS)
    else:
        with pytest.raises(management.Invalid) as caught:
            management.refuse_unimplemented(body, management.CREATE_PARAMETERS)
        assert str(caught.value).startswith(message)


def test_rate_limit_allows_a_burst_per_period_and_counts_the_rest() -> None:
    limit = RateLimit(burst=2, period_s=10)
    assert [limit.allow(t) for t in (0, 1, 2, 3)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert limit.allow(10.5) == (True, 2)  # a new period: the two left out are reported
    assert limit.allow(11) == (True, 0)


def test_short_is_one_bounded_line() -> None:
    assert short("a\nb\x00c") == "a\\nb\\x00c"
    assert len(short("x" * 1000)) == 160


@pytest.mark.parametrize(("host", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9"), ("0.0.0.0", "http://127.0.0.1:9"),
    ("::", "http://[::1]:9"), ("::1", "http://[::1]:9"), ("example.org", "http://example.org:9"),
])
def test_client_url(host: str, url: str) -> None:
    assert daemonfile.client_url(host, 9) == url


# --- headwater deploy and the daemon's address, end to end ------------------------------------------


def test_deploy_leaves_out_what_is_not_code_and_keeps_links_as_links(tmp_path: Path) -> None:
    folder = tmp_path / "fn"
    (folder / "pkg" / "__pycache__").mkdir(parents=True)
    (folder / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text("[core]")
    (folder / ".env").write_text("SECRET=1")
    (folder / "myenv").mkdir()
    (folder / "myenv" / "pyvenv.cfg").write_text("home = /usr")  # a virtualenv by any name
    (folder / "myenv" / "lib.py").write_text("")
    (folder / "data.csv").write_text("a,b")
    (folder / ".headwaterignore").write_text("# big files\n*.csv\n")
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "alias.py").symlink_to("app.py")
    (folder / "linked").symlink_to(folder / "pkg", target_is_directory=True)
    with zipfile.ZipFile(BytesIO(cli.zip_folder(folder))) as z:
        names = sorted(z.namelist())
        assert names == ["alias.py", "app.py", "linked", "passwd", "pkg/__init__.py"]
        assert z.read("passwd") == b"/etc/passwd"  # the link, never its target's contents
        assert (z.getinfo("passwd").external_attr >> 16) & 0o170000 == 0o120000


def test_deploy_of_a_link_outside_the_folder_is_refused_naming_it(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = make_daemon("")
    folder = tmp_path / "fn"
    folder.mkdir()
    (folder / "app.py").write_text("def handler(e, c):\n    return 1\n")
    (folder / "passwd").symlink_to("/etc/passwd")
    result = subprocess.run([sys.executable, "-m", "router", "deploy", str(folder), "--name", "x",
                             "--url", daemon.url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and '"passwd"' in result.stderr, result.stderr


def test_client_commands_find_the_daemon_serve_started(make_daemon, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    daemon: Daemon = make_daemon(function_toml("here", "outcomes.returns"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}

    def headwater(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "router", *args], capture_output=True,
                              text=True, timeout=60, cwd=daemon.folder, env=env)

    state = daemon.folder / "var" / daemonfile.NAME
    assert daemonfile.read(daemon.folder / "var") == daemonfile.State(daemon.url, daemon.proc.pid)  # type: ignore[union-attr]
    listed = headwater("functions")  # no --url: the daemon serving ./config.toml, on port 0
    assert listed.returncode == 0 and "here" in listed.stdout, listed.stderr
    assert daemon.stop() == 0
    assert not state.exists()
    gone = headwater("functions")
    assert gone.returncode == 1
    assert "http://127.0.0.1:9000" in gone.stderr and str(state) in gone.stderr
    elsewhere = subprocess.run([sys.executable, "-m", "router", "functions"], capture_output=True,
                               text=True, timeout=60, cwd=tmp_path, env=env)
    assert "no config.toml here" in elsewhere.stderr
