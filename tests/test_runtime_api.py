"""Custom runtimes through the Lambda Runtime API: a shell bootstrap written after AWS's tutorial
(curl in a loop), AWS's own Python runtime interface client (awslambdaric, from PyPI, unmodified),
and bootstraps that break the protocol. All sandboxed, on the real daemon."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Daemon, function_toml

from workers.runtimes.base import BASE_PYTHON
from workers.runtimes.python import distribution_files

# After AWS's custom runtime tutorial: the handler is a shell function, the loop is curl.
TUTORIAL = """\
#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
handler() {
  printf '{"echo": %s, "task_root": "%s", "handler": "%s"}' "$1" "$LAMBDA_TASK_ROOT" "$_HANDLER"
}
while true; do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  echo "handling $REQUEST_ID"
  RESPONSE=$(handler "$EVENT_DATA")
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "$RESPONSE"
done
"""

# Breaks the protocol on purpose, reporting what the API answered to each breach.
RUDE = """\
#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  case "$EVENT_DATA" in
    *sleep*) sleep 30 ;;
    *exit*) exit 3 ;;
    *error*)
      curl -sS -o /dev/null -H "Lambda-Runtime-Function-Error-Type: Custom.Oops" \\
        "$API/invocation/$REQUEST_ID/error" -d '{"errorMessage": "it went wrong", "errorType": "Oops"}' ;;
    *big*)
      head -c 7000000 /dev/zero | tr '\\0' 'a' > /tmp/big
      echo "too large: $(curl -s -o /dev/null -w '%{http_code}' "$API/invocation/$REQUEST_ID/response" \\
        --data-binary @/tmp/big)" ;;
    *)
      curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d '"first"'
      echo "second: $(curl -s -o /dev/null -w '%{http_code}' "$API/invocation/$REQUEST_ID/response" -d '"x"')"
      echo "unknown: $(curl -s -o /dev/null -w '%{http_code}' "$API/invocation/nope/response" -d '"x"')" ;;
  esac
done
"""

RIC_APP = """\
import os

def handler(event, context):
    return {"event": event, "request_id": context.aws_request_id,
            "function_name": context.function_name, "remaining_ms": context.get_remaining_time_in_millis(),
            "cwd": os.getcwd()}

def fails(event, context):
    raise ValueError("bad event")
"""

RIC_BOOTSTRAP = """\
#!/bin/sh
exec "$RIC_PYTHON" -m awslambdaric "$_HANDLER"
"""

SILENT = "#!/bin/sh\nexec sleep 60\n"


def bundle_ric(folder: Path) -> None:
    for path in distribution_files(("awslambdaric", "simplejson", "snapshot-restore-py")):
        copy = shutil.copytree if os.path.isdir(path) else shutil.copy
        copy(path, folder / "ric" / os.path.basename(path))


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    runtime = "provided.al2023"
    # awslambdaric comes in the package, as `pip install --target` puts it there, and runs on the
    # machine's Python (the sandbox binds the interpreter, not the daemon's virtualenv).
    ric_env = {"RIC_PYTHON": BASE_PYTHON}
    functions = "".join([
        function_toml("tutorial", "function.handler", code="tutorial", runtime=runtime),
        function_toml("rude", "x", code="rude", runtime=runtime, timeout_s=2),
        function_toml("ric", "app.handler", code="ric", runtime=runtime, env=ric_env),
        function_toml("ric-fails", "app.fails", code="ric", runtime=runtime, env=ric_env),
        function_toml("ric-broken", "broken.handler", code="ric", runtime=runtime, env=ric_env),
        function_toml("unexecutable", "x", code="unexecutable", runtime=runtime),
        function_toml("missing", "x", code="missing", runtime=runtime),
        function_toml("silent", "x", code="silent", runtime=runtime),
    ])
    files = {"tutorial/bootstrap": TUTORIAL, "rude/bootstrap": RUDE, "ric/app.py": RIC_APP,
             "ric/bootstrap": RIC_BOOTSTRAP, "ric/broken.py": "import no_such_module\n",
             "unexecutable/bootstrap": TUTORIAL, "missing/README": "no bootstrap here\n",
             "silent/bootstrap": SILENT}
    d = make_daemon(functions, files, before_start=bundle_ric)
    for name in ("tutorial", "rude", "ric", "silent"):
        (d.folder / name / "bootstrap").chmod(0o755)
    return d


def invoke(daemon: Daemon, name: str, event: object) -> tuple[int, dict[str, str], object]:
    r = daemon.invoke(name, event)
    return r.status, dict(r.headers), r.json()


def test_the_tutorials_shell_bootstrap_runs_sandboxed(daemon: Daemon) -> None:
    for n in range(3):  # one worker, warm after the first
        status, headers, body = invoke(daemon, "tutorial", {"n": n})
        assert status == 200 and "X-Amz-Function-Error" not in headers, body
        assert body == {"echo": {"n": n}, "task_root": "/var/task", "handler": "function.handler"}
    request_id = headers["x-amzn-RequestId"]
    record = daemon.record(request_id)
    assert record["outcome"] == "success" and record["cold"] is False
    daemon.wait_for_line(f"handling {request_id}")
    daemon.wait_for_line(f"END RequestId: {request_id}")


def test_awslambdaric_unmodified_serves_a_python_handler(daemon: Daemon) -> None:
    status, headers, body = invoke(daemon, "ric", {"hello": "world"})
    assert status == 200 and "X-Amz-Function-Error" not in headers, body
    assert isinstance(body, dict)
    assert body["event"] == {"hello": "world"}
    assert body["request_id"] == headers["x-amzn-RequestId"]
    assert body["function_name"] == "ric" and body["cwd"] == "/var/task"
    assert 0 < body["remaining_ms"] <= 3000


def test_awslambdaric_function_errors_and_init_errors_reach_the_caller(daemon: Daemon) -> None:
    status, headers, body = invoke(daemon, "ric-fails", {})
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "ValueError", body
    assert body["errorMessage"] == "bad event"
    assert daemon.record(headers["x-amzn-RequestId"])["outcome"] == "error"
    status, headers, body = invoke(daemon, "ric-broken", {})
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "Runtime.ImportModuleError", body
    assert "no_such_module" in body["errorMessage"]


def test_a_second_response_or_an_unknown_id_is_refused(daemon: Daemon) -> None:
    status, headers, body = invoke(daemon, "rude", {})
    assert status == 200 and "X-Amz-Function-Error" not in headers and body == "first"
    daemon.wait_for_line("second: 403")
    daemon.wait_for_line("unknown: 400")


def test_a_response_over_the_limit_is_refused_and_fails_the_invocation(daemon: Daemon) -> None:
    status, headers, body = invoke(daemon, "rude", "big")
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "Function.ResponseSizeTooLarge", body
    daemon.wait_for_line("too large: 413")


def test_errors_timeouts_and_exits_end_only_their_invocation(daemon: Daemon) -> None:
    status, headers, body = invoke(daemon, "rude", "error")
    assert headers["X-Amz-Function-Error"] == "Unhandled"
    assert body == {"errorMessage": "it went wrong", "errorType": "Oops"}
    assert daemon.record(headers["x-amzn-RequestId"])["error_type"] == "Custom.Oops"
    t0 = time.monotonic()
    status, headers, body = invoke(daemon, "rude", "sleep")
    assert time.monotonic() - t0 < 5 and isinstance(body, dict)
    assert body["errorType"] == "Sandbox.Timedout" or "timed out" in body["errorMessage"], body
    status, headers, body = invoke(daemon, "rude", "exit")
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "Runtime.ExitError", body
    assert invoke(daemon, "rude", {})[2] == "first"  # and the function goes on


@pytest.mark.parametrize(("name", "message"), [
    ("unexecutable", "permission denied"),
    ("missing", "Couldn't find valid bootstrap(s): [/var/task/bootstrap]"),
])
def test_a_bootstrap_that_cannot_run_is_an_invalid_entrypoint(daemon: Daemon, name: str,
                                                              message: str) -> None:
    status, headers, body = invoke(daemon, name, {})
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "Runtime.InvalidEntrypoint", body
    assert message in body["errorMessage"]


def test_a_bootstrap_that_never_asks_for_work_times_out_its_init(daemon: Daemon) -> None:
    t0 = time.monotonic()
    status, headers, body = invoke(daemon, "silent", {})
    assert status == 200 and headers["X-Amz-Function-Error"] == "Unhandled"
    assert isinstance(body, dict) and body["errorType"] == "Sandbox.Timedout", body
    assert 9 < time.monotonic() - t0 < 20  # Lambda's 10 s for the init phase


def zip_of(files: dict[str, tuple[str, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, (text, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16  # the bootstrap's execute bits travel in the zip
            z.writestr(info, text)
    return buffer.getvalue()


def aws(daemon: Daemon, *args: str) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
           "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    done = subprocess.run(["aws", "lambda", *args, "--endpoint-url", daemon.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
@pytest.mark.parametrize(("runtime", "handler", "files"), [
    ("provided.al2023", "function.handler", {"bootstrap": (TUTORIAL, 0o755)}),
    ("nodejs{major}.x", "index.handler",
     {"index.mjs": ("export const handler = async (e) => ({ echo: e });\n", 0o644)}),
])
def test_the_aws_cli_deploys_and_invokes_each_runtime(daemon: Daemon, tmp_path: Path, runtime: str,
                                                      handler: str, files: dict) -> None:
    if "{major}" in runtime:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        runtime = runtime.format(major=version.lstrip("v").split(".")[0])
    name = f"cli-{runtime.replace('.', '-')}"
    package = tmp_path / "package.zip"
    package.write_bytes(zip_of(files))
    created = aws(daemon, "create-function", "--function-name", name, "--runtime", runtime,
                  "--handler", handler, "--role", "arn:aws:iam::123456789012:role/x",
                  "--zip-file", f"fileb://{package}")
    assert created["Runtime"] == runtime
    out = tmp_path / "out.json"
    v2 = ["--cli-binary-format", "raw-in-base64-out"] if "aws-cli/2" in subprocess.run(
        ["aws", "--version"], capture_output=True, text=True).stdout else []
    result = aws(daemon, "invoke", "--function-name", name, *v2, "--payload", '{"k": 1}', str(out))
    assert result["StatusCode"] == 200 and "FunctionError" not in result, result
    assert json.loads(out.read_text())["echo"] == {"k": 1}


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js on this machine")
@pytest.mark.parametrize(("example", "runtime", "handler", "message"), [
    ("hello-shell", "provided.al2023", "function.handler", "hey from a shell"),
    ("hello-node", "nodejs{major}.x", "index.handler", "hey, you!"),
])
def test_the_examples_deploy_with_the_cli(daemon: Daemon, example: str, runtime: str, handler: str,
                                          message: str) -> None:
    if "{major}" in runtime:
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        runtime = runtime.format(major=version.lstrip("v").split(".")[0])
    folder = Path(__file__).resolve().parent.parent / "examples" / example

    def headwater(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "router", *args, "--url", daemon.url],
                              capture_output=True, text=True, timeout=60)

    deployed = headwater("deploy", str(folder), "--name", example, "--runtime", runtime,
                         "--handler", handler, "--env", "GREETING=hey")
    assert deployed.returncode == 0, deployed.stderr
    invoked = headwater("invoke", example, "--payload", '{"name": "you"}')
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout)["message"] == message
