"""A blueprint of each runtime, as a new user takes it: ``headwater init``, then the deploy
command it prints, then ``headwater invoke`` against a real daemon; and the examples/ folders,
deployed the same way."""

from __future__ import annotations

import json
import shlex
import shutil
import time
from pathlib import Path

import pytest
from conftest import Daemon, untimed
from test_deploy import SERVER, headwater

from workers.runtimes import nodejs

AUTH = {"HEADWATER_TOKEN": "tok-123"}
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    return make_daemon("", server=SERVER)


def deploy_command(printed: str, url: str) -> list[str]:
    """The arguments of the ``headwater deploy`` line ``init`` printed, pointed at ``url``."""
    line = next(line for line in printed.splitlines() if "headwater deploy" in line)
    return [*shlex.split(line.split("headwater ", 1)[1]), "--url", url]


@pytest.mark.parametrize(("blueprint", "event", "want"), [
    ("hello", {"name": "Ada"}, {"message": "Hello, Ada!"}),
    pytest.param("nodejs-hello", {"name": "Ada"}, {"message": "Hello, Ada!", "invocations": 1},
                 marks=pytest.mark.skipif(nodejs.installed() is None, reason="no Node.js here")),
    ("provided-shell", {"name": "Ada"}, {"message": "Hello, Ada!"}),
])
def test_init_deploy_invoke(daemon: Daemon, tmp_path: Path, blueprint: str,
                            event: dict[str, str], want: dict[str, object]) -> None:
    name = f"bp-{blueprint}"
    made = headwater("init", name, "--blueprint", blueprint, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    deployed = headwater(*deploy_command(made.stdout, daemon.url), env=AUTH)
    assert deployed.returncode == 0, deployed.stderr
    invoked = headwater("invoke", name, "--payload", json.dumps(event), "--url", daemon.url,
                        env=AUTH)
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == want
    if blueprint != "hello":  # the others log, their lines tagged with the function
        assert logged(daemon, f"[{name}] ", "greeting Ada")


def logged(daemon: Daemon, prefix: str, text: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(untimed(line).startswith(prefix) and text in line for line in list(daemon.lines)):
            return True
        time.sleep(0.02)
    return False


def test_a_failing_shell_handler_is_a_function_error(daemon: Daemon, tmp_path: Path) -> None:
    made = headwater("init", "bp-fails", "--blueprint", "provided-shell", "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    (tmp_path / "bp-fails" / "function.sh").write_text("handler() {\n  return 3\n}\n")
    assert headwater(*deploy_command(made.stdout, daemon.url), env=AUTH).returncode == 0
    r = daemon.invoke("bp-fails", {}, headers={"Authorization": "Bearer tok-123"})
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled", r
    assert r.json() == {"errorType": "Function.Failed",
                        "errorMessage": "handler exited with status 3"}


@pytest.mark.parametrize(("example", "runtime", "handler", "want"), [
    ("hello", None, "app.handler", "hello, world!"),
    pytest.param("hello-node", nodejs.installed(), "index.handler", "hello, world!",
                 marks=pytest.mark.skipif(nodejs.installed() is None, reason="no Node.js here")),
    ("hello-shell", "provided.al2023", "function.handler", "hello from a shell"),
])
def test_examples_deploy_and_run(daemon: Daemon, tmp_path: Path, example: str,
                                 runtime: str | None, handler: str, want: str) -> None:
    folder = shutil.copytree(EXAMPLES / example, tmp_path / example)
    name = f"ex-{example}"
    extra = ["--runtime", runtime] if runtime else []
    deployed = headwater("deploy", str(folder), "--name", name, "--handler", handler, *extra,
                         "--url", daemon.url, env=AUTH)
    assert deployed.returncode == 0, deployed.stderr
    invoked = headwater("invoke", name, "--payload", "{}", "--url", daemon.url, env=AUTH)
    assert invoked.returncode == 0 and want in invoked.stdout, invoked
