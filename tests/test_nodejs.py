"""Node.js functions (the machine's node, sandboxed): async and callback handlers, CommonJS and ES
modules, Lambda's context object, error shapes, log lines and init errors."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from conftest import Daemon, function_toml

NODE = shutil.which("node")
MAJOR = (re.match(r"v(\d+)", subprocess.run([NODE, "--version"], capture_output=True, text=True).stdout)
         if NODE else None)
pytestmark = pytest.mark.skipif(MAJOR is None, reason="no Node.js on this machine")
RUNTIME = f"nodejs{MAJOR[1]}.x" if MAJOR else "nodejs20.x"

CJS = """\
exports.handler = async (event, context) => {
  console.log("event", JSON.stringify(event));
  return { event, requestId: context.awsRequestId, name: context.functionName,
           arn: context.invokedFunctionArn, memory: context.memoryLimitInMB,
           remaining: context.getRemainingTimeInMillis(), cwd: process.cwd(),
           root: process.env.LAMBDA_TASK_ROOT };
};
exports.callback = (event, context, callback) => {
  setTimeout(() => callback(null, { via: "callback", n: event.n }), 5);
};
exports.fails = async () => { throw new TypeError("not this event"); };
exports.rejects = (event, context, callback) => callback(new Error("callback error"));
"""

ESM = """\
export const handler = async (event) => ({ module: "esm", got: event });
"""

BROKEN = "exports.handler = async () => {;\n"


@pytest.fixture(scope="module")
def daemon(make_daemon) -> Daemon:  # type: ignore[no-untyped-def]
    functions = "".join([
        function_toml("cjs", "index.handler", code="node", runtime=RUNTIME),
        function_toml("callback", "index.callback", code="node", runtime=RUNTIME),
        function_toml("fails", "index.fails", code="node", runtime=RUNTIME),
        function_toml("rejects", "index.rejects", code="node", runtime=RUNTIME),
        function_toml("esm", "esm.handler", code="node", runtime=RUNTIME),
        function_toml("syntax", "broken.handler", code="node", runtime=RUNTIME),
        function_toml("missing", "index.nothing", code="node", runtime=RUNTIME),
    ])
    return make_daemon(functions, {"node/index.js": CJS, "node/esm.mjs": ESM,
                                   "node/broken.js": BROKEN})


def test_an_async_commonjs_handler_gets_lambdas_context(daemon: Daemon) -> None:
    r = daemon.invoke("cjs", {"a": 1})
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    body = r.json()
    assert isinstance(body, dict)
    request_id = r.headers["x-amzn-RequestId"]
    assert body["event"] == {"a": 1} and body["requestId"] == request_id
    assert body["name"] == "cjs" and body["arn"].endswith(":function:cjs") and body["memory"] == "128"
    assert 0 < body["remaining"] <= 3000
    assert body["cwd"] == "/var/task" and body["root"] == "/var/task"
    line = daemon.wait_for_line('event {"a":1}')
    assert re.search(rf"\d{{4}}-\d\d-\d\dT[\d:.]+Z\t{request_id}\tINFO\tevent", line), line
    assert daemon.record(request_id)["outcome"] == "success"


def test_callback_handlers_and_es_modules(daemon: Daemon) -> None:
    assert daemon.invoke("callback", {"n": 7}).json() == {"via": "callback", "n": 7}
    assert daemon.invoke("esm", [1, 2]).json() == {"module": "esm", "got": [1, 2]}


@pytest.mark.parametrize(("name", "error_type", "message"), [
    ("fails", "TypeError", "not this event"),
    ("rejects", "Error", "callback error"),
])
def test_errors_come_back_in_lambdas_shape(daemon: Daemon, name: str, error_type: str,
                                           message: str) -> None:
    r = daemon.invoke(name, {})
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled"
    body = r.json()
    assert isinstance(body, dict)
    assert body["errorType"] == error_type and body["errorMessage"] == message
    assert isinstance(body["trace"], list) and body["trace"][0].startswith(error_type)
    assert daemon.invoke(name, {}).status == 200  # the worker lives on


@pytest.mark.parametrize(("name", "error_type"), [
    ("syntax", "Runtime.UserCodeSyntaxError"),
    ("missing", "Runtime.HandlerNotFound"),
])
def test_init_errors_reach_the_caller(daemon: Daemon, name: str, error_type: str) -> None:
    r = daemon.invoke(name, {})
    assert r.status == 200 and r.headers["X-Amz-Function-Error"] == "Unhandled"
    body = r.json()
    assert isinstance(body, dict) and body["errorType"] == error_type, body
