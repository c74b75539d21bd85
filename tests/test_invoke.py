"""The Invoke API end to end: real daemon, real worker processes, real HTTP on a free port."""

from __future__ import annotations

import base64
import json
import os
import threading
import time

import pytest
from conftest import Daemon, function_toml, untimed

FUNCTIONS = "".join([
    function_toml("echo", "outcomes.echo", env={"GREETING": "hi"}),
    function_toml("plainecho", "outcomes.echo"),
    function_toml("count", "outcomes.count", max_workers=1),
    function_toml("raises", "outcomes.raises"),
    function_toml("sleeps", "outcomes.sleeps", timeout_s=1, max_workers=1),
    function_toml("exits", "outcomes.exits", max_workers=1),
    function_toml("unserialisable", "outcomes.unserialisable"),
    function_toml("returns", "outcomes.returns"),
    function_toml("prints", "noisy.prints", max_workers=1),
    function_toml("floods", "noisy.floods", max_workers=1),
    function_toml("closes", "noisy.closes_stdout", max_workers=1),
    function_toml("closes_raises", "noisy.closes_stdout_then_raises"),
    function_toml("nomodule", "missing_module.handler"),
    function_toml("nohandler", "outcomes.not_there"),
    function_toml("badsyntax", "broken.handler"),
    function_toml("initraises", "initraises.handler"),
    function_toml("subpkg", "pkg/sub/mod.handler"),
    function_toml("subpkgdots", "pkg.sub.mod.handler"),
    function_toml("disabled", "outcomes.count", max_workers=0),
])

FILES = {
    "functions/broken.py": "def handler(event, context)\n    return 1\n",
    "functions/initraises.py": "raise RuntimeError('no database')\n",
    "functions/pkg/__init__.py": "",
    "functions/pkg/sub/__init__.py": "",
    "functions/pkg/sub/mod.py": "def handler(event, context):\n    return 'deep'\n",
}


@pytest.fixture(scope="module", params=[True, False], ids=["forked", "fresh"])
def daemon(make_daemon, request) -> Daemon:  # type: ignore[no-untyped-def]
    """Every test runs against workers forked from a fork server and against fresh processes."""
    mode = f"fork_server = {str(request.param).lower()}\n"
    functions = FUNCTIONS.replace("[[functions]]\n", "[[functions]]\n" + mode)
    return make_daemon(functions, FILES)


def function_error(r) -> dict:  # type: ignore[no-untyped-def]
    assert r.status == 200, r
    assert r.headers["X-Amz-Function-Error"] == "Unhandled", r
    return r.json()


# --- success, context, environment -----------------------------------------------------------


def test_success_passes_event_and_lambda_context(daemon: Daemon) -> None:
    r = daemon.invoke("echo", {"name": "Ann", "n": [1, 2.5, None, True]})
    assert r.status == 200, r
    assert "X-Amz-Function-Error" not in r.headers
    assert r.headers["X-Amz-Executed-Version"] == "$LATEST"
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["event"] == {"name": "Ann", "n": [1, 2.5, None, True]}
    assert body["request_id"] == r.headers["x-amzn-RequestId"]
    assert body["function_name"] == "echo"
    assert body["function_version"] == "$LATEST"
    assert body["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:echo"
    assert body["memory"] == "128"
    assert body["log_group"] == "/aws/lambda/echo"
    assert "[$LATEST]" in body["log_stream"]
    assert 2000 < body["remaining_ms"] <= 3000
    assert body["identity"] == [None, None]
    assert body["client_context"] is None


def test_worker_environment_is_lambdas_and_the_functions_own(daemon: Daemon) -> None:
    env = daemon.invoke("echo", {}).json()["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "echo"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["_HANDLER"] == "outcomes.echo"
    assert env["LAMBDA_TASK_ROOT"] == "/var/task"  # the code, as the sandbox shows it
    assert env["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/echo"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert env["TZ"] == "UTC"
    assert env["GREETING"] == "hi"
    assert env["AWS_REGION"] == "us-east-1"
    # Nothing of the daemon's own environment leaks in.
    assert not {k for k in env if k.startswith(("PYTEST", "HEADWATER", "VIRTUAL_ENV"))}
    assert set(env) - {"GREETING"} == set(daemon.invoke("plainecho", {}).json()["env"])


def test_only_the_functions_env_reaches_its_workers(daemon: Daemon) -> None:
    assert daemon.invoke("echo", {}).json()["env"]["GREETING"] == "hi"
    # The same handler in another function: echo's GREETING is not visible to it.
    assert "GREETING" not in daemon.invoke("plainecho", {}).json()["env"]


def test_empty_body_is_an_empty_object(daemon: Daemon) -> None:
    assert daemon.invoke("echo").json()["event"] == {}


@pytest.mark.parametrize("value", ["text", 42, 1.5, None, [1, "a"], {"deep": {"er": [{}]}}, "é✓"])
def test_any_json_result_round_trips(daemon: Daemon, value: object) -> None:
    r = daemon.invoke("returns", {"value": value})
    assert r.status == 200, r
    assert r.json() == value


def test_warm_worker_keeps_module_state(daemon: Daemon) -> None:
    first = daemon.invoke("count", {}).json()
    second = daemon.invoke("count", {}).json()
    third = daemon.invoke("count", {}).json()
    assert first["pid"] == second["pid"] == third["pid"]
    assert [first["counter"] + 1, first["counter"] + 2] == [second["counter"], third["counter"]]


def test_handlers_in_sub_packages(daemon: Daemon) -> None:
    assert daemon.invoke("subpkg", {}).json() == "deep"
    assert daemon.invoke("subpkgdots", {}).json() == "deep"


def test_client_context_reaches_the_handler(daemon: Daemon) -> None:
    ctx = {"client": {"installation_id": "inst-1"}, "custom": {"k": "v"}, "env": {"os": "x"}}
    header = base64.b64encode(json.dumps(ctx).encode()).decode()
    body = daemon.invoke("echo", {}, headers={"X-Amz-Client-Context": header}).json()
    assert body["client_context"] == {"installation_id": "inst-1", "custom": {"k": "v"},
                                      "env": {"os": "x"}}


# --- function errors -------------------------------------------------------------------------


def test_raising_handler_gives_unhandled_error_object(daemon: Daemon) -> None:
    r = daemon.invoke("raises", {})
    error = function_error(r)
    assert error["errorType"] == "KeyError"
    assert error["errorMessage"] == "'action'"
    assert any("outcomes.py" in frame and "in raises" in frame for frame in error["stackTrace"])
    assert not any("bootstrap.py" in frame for frame in error["stackTrace"])
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "error"
    assert record["error_type"] == "KeyError"


def test_unserialisable_result_is_a_function_error(daemon: Daemon) -> None:
    r = daemon.invoke("unserialisable", {})
    error = function_error(r)
    assert error["errorType"] == "Runtime.MarshalError"
    assert "not JSON serializable" in error["errorMessage"]
    assert daemon.record(r.headers["x-amzn-RequestId"])["outcome"] == "error"
    assert daemon.invoke("unserialisable", {}).status == 200  # the worker survived


def test_nan_result_is_a_marshal_error(daemon: Daemon) -> None:
    r = daemon.invoke("returns", raw=b'{"value": 1e999}')
    assert function_error(r)["errorType"] == "Runtime.MarshalError"


@pytest.mark.parametrize(("name", "error_type", "message"), [
    ("nomodule", "Runtime.ImportModuleError",
     "Unable to import module 'missing_module': No module named 'missing_module'"),
    ("nohandler", "Runtime.HandlerNotFound", "Handler 'not_there' missing on module 'outcomes'"),
    ("badsyntax", "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken'"),
    ("initraises", "RuntimeError", "no database"),
])
def test_init_errors(daemon: Daemon, name: str, error_type: str, message: str) -> None:
    r = daemon.invoke(name, {})
    error = function_error(r)
    assert error["errorType"] == error_type
    assert error["errorMessage"].startswith(message)
    assert error["requestId"] == r.headers["x-amzn-RequestId"]
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "error"
    assert record["error_type"] == error_type
    assert record["cold"] is True
    # Callers during the back-off get the same error at once, without a new attempt.
    started = time.monotonic()
    again = daemon.invoke(name, {})
    assert function_error(again)["errorType"] == error_type
    assert time.monotonic() - started < 0.5


def test_timeout_kills_the_worker_and_reports_sandbox_timedout(daemon: Daemon) -> None:
    before = daemon.invoke("sleeps", {"seconds": 0}).json()
    assert before == {"slept": 0}
    started = time.monotonic()
    r = daemon.invoke("sleeps", {"seconds": 30})
    elapsed = time.monotonic() - started
    error = function_error(r)
    assert 0.9 < elapsed < 2.5
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert r.headers["x-amzn-RequestId"] in error["errorMessage"]
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "timeout"
    assert record["error_type"] == "Sandbox.Timedout"
    assert 900 < record["duration_ms"] < 2500
    # The next invocation gets a fresh worker.
    after = daemon.invoke("sleeps", {"seconds": 0})
    assert after.status == 200 and after.json() == {"slept": 0}
    assert daemon.record(after.headers["x-amzn-RequestId"])["cold"] is True
    assert daemon.record(after.headers["x-amzn-RequestId"])["worker_pid"] != record["worker_pid"]


@pytest.mark.parametrize(("how", "text"), [
    ("os_exit", "exit status 3"), ("sigkill", "signal: killed"), ("sys_exit", "exit status 2")])
def test_worker_death_is_runtime_exit_error(daemon: Daemon, how: str, text: str) -> None:
    r = daemon.invoke("exits", {"how": how})
    error = function_error(r)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].endswith(f"Runtime exited with error: {text}")
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "crash"
    assert record["error_type"] == "Runtime.ExitError"
    assert daemon.invoke("exits", {"how": "none"}).json() == "survived"  # replaced


def test_other_functions_are_served_while_one_hangs(daemon: Daemon) -> None:
    results: dict[str, object] = {}
    slow = threading.Thread(target=lambda: results.update(slow=daemon.invoke("sleeps", {})))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    for _ in range(20):
        assert daemon.invoke("returns", {"value": 1}).status == 200
    assert time.monotonic() - started < 1.0
    assert daemon.request("GET", "/healthz").status == 200
    slow.join()
    assert results["slow"].headers["X-Amz-Function-Error"] == "Unhandled"  # type: ignore[attr-defined]


# --- output capture ------------------------------------------------------------------------


def test_output_is_tagged_and_between_start_and_report(daemon: Daemon) -> None:
    r = daemon.invoke("prints", {})
    assert r.status == 200 and r.json() == {"ok": True}
    rid = r.headers["x-amzn-RequestId"]
    report = daemon.wait_for_line(f"REPORT RequestId: {rid}")
    lines = [untimed(line) for line in daemon.lines if rid in line]
    texts = [line.split("\t", 1)[-1] for line in lines]
    assert lines[0] == f"[prints] START RequestId: {rid} Version: $LATEST"
    assert texts[1:4] == ["hello from print", "to stderr", "raw fd 1 write"], lines
    assert texts[-3] == "no newline at the end", lines
    assert any("logged at info" in t and rid in t and t.startswith("[INFO]") for t in texts)
    assert lines[-2] == f"[prints] END RequestId: {rid}"
    assert lines[-1] == untimed(report)
    assert "\tDuration: " in report and "\tBilled Duration: " in report
    assert "\tMemory Size: 128 MB\tMax Memory Used: " in report


def test_log_tail_is_the_invocations_log(daemon: Daemon) -> None:
    r = daemon.invoke("prints", {}, headers={"X-Amz-Log-Type": "Tail"})
    rid = r.headers["x-amzn-RequestId"]
    log = base64.b64decode(r.headers["X-Amz-Log-Result"]).decode()
    assert log.startswith(f"START RequestId: {rid} Version: $LATEST\n")
    assert "hello from print\n" in log and "raw fd 1 write\n" in log
    assert f"\nEND RequestId: {rid}\nREPORT RequestId: {rid}\tDuration: " in log
    assert log.endswith("\n")


def test_log_tail_is_at_most_4_kb_and_ends_with_report(daemon: Daemon) -> None:
    r = daemon.invoke("floods", {"kib": 64}, headers={"X-Amz-Log-Type": "Tail"})
    assert r.status == 200, r
    log = base64.b64decode(r.headers["X-Amz-Log-Result"])
    assert len(log) == 4096
    assert b"REPORT RequestId: " + r.headers["x-amzn-RequestId"].encode() in log


def test_flood_of_output_does_not_corrupt_the_channel(daemon: Daemon) -> None:
    for _ in range(3):
        r = daemon.invoke("floods", {"kib": 2048})
        assert r.status == 200 and r.json() == {"ok": True}, r


def test_closed_stdout_does_not_break_the_worker(daemon: Daemon) -> None:
    first = daemon.invoke("closes", {})
    assert first.status == 200 and first.json()["ok"] is True, first
    second = daemon.invoke("closes", {})
    assert second.status == 200 and second.json() == first.json(), second
    error = function_error(daemon.invoke("closes_raises", {}))
    assert error["errorType"] == "ValueError"


# --- request errors ------------------------------------------------------------------------


def aws_error(r, status: int, code: str) -> str:  # type: ignore[no-untyped-def]
    assert r.status == status, r
    assert r.headers["x-amzn-ErrorType"] == code, r
    body = r.json()
    return body.get("message") or body["Message"]


def test_unknown_function_is_404(daemon: Daemon) -> None:
    message = aws_error(daemon.invoke("nope", {}), 404, "ResourceNotFoundException")
    assert "Function not found" in message and "nope" in message


def test_unknown_qualifier_is_404(daemon: Daemon) -> None:
    r = daemon.request("POST", "/2015-03-31/functions/echo/invocations?Qualifier=7", b"{}")
    aws_error(r, 404, "ResourceNotFoundException")
    assert daemon.request("POST", "/2015-03-31/functions/echo/invocations?Qualifier=$LATEST",
                          b"{}").status == 200


def test_function_addressed_by_arn(daemon: Daemon) -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:function:returns"
    assert daemon.invoke(arn, {"value": 5}).json() == 5
    assert daemon.invoke("returns:$LATEST", {"value": 6}).json() == 6


@pytest.mark.parametrize("body", [b"{", b"not json", b'{"a":1} trailing', b'"\xff"', b"[1,]"])
def test_body_that_is_not_json_is_400(daemon: Daemon, body: bytes) -> None:
    aws_error(daemon.invoke("echo", raw=body), 400, "InvalidRequestContentException")


def test_body_over_6_mb_is_413(daemon: Daemon) -> None:
    body = b'"' + b"x" * (6 * 1024 * 1024 - 1) + b'"'  # 6,291,457 bytes
    assert len(body) == 6 * 1024 * 1024 + 1
    aws_error(daemon.invoke("returns", raw=body), 413, "RequestTooLargeException")


def test_body_of_exactly_6_mb_is_accepted(daemon: Daemon) -> None:
    value = "x" * (6 * 1024 * 1024 - 13)
    body = json.dumps({"value": value}).encode()
    assert len(body) == 6 * 1024 * 1024
    r = daemon.invoke("returns", raw=body)
    assert r.status == 200
    assert r.json() == value


def test_result_over_the_response_limit_is_a_function_error(daemon: Daemon) -> None:
    r = daemon.invoke("echo", {"pad": "y" * (6 * 1024 * 1024 - 100)})  # the echo adds more
    error = function_error(r)
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291556" in error["errorMessage"]
    assert daemon.record(r.headers["x-amzn-RequestId"])["error_type"] == \
        "Function.ResponseSizeTooLarge"


@pytest.mark.parametrize("kind", ["Async", "requestresponse", ""])
def test_unsupported_invocation_type_is_400(daemon: Daemon, kind: str) -> None:
    r = daemon.invoke("echo", {}, headers={"X-Amz-Invocation-Type": kind})
    aws_error(r, 400, "InvalidParameterValueException")


def test_dry_run_is_204_and_runs_nothing(daemon: Daemon) -> None:
    before = len(daemon.records())
    r = daemon.invoke("echo", {}, headers={"X-Amz-Invocation-Type": "DryRun"})
    assert r.status == 204 and r.body == b""
    assert len(daemon.records()) == before


def test_bad_log_type_and_client_context_are_400(daemon: Daemon) -> None:
    aws_error(daemon.invoke("echo", {}, headers={"X-Amz-Log-Type": "Full"}), 400,
              "InvalidParameterValueException")
    aws_error(daemon.invoke("echo", {}, headers={"X-Amz-Client-Context": "!!notbase64"}), 400,
              "InvalidRequestContentException")


def test_disabled_function_is_throttled_with_a_record(daemon: Daemon) -> None:
    r = daemon.invoke("disabled", {})
    aws_error(r, 429, "TooManyRequestsException")
    assert r.json()["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert record["outcome"] == "throttled"
    assert record["cost_usd"] == 0


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/2015-03-31/functions/echo/invocations"),
    ("POST", "/2015-03-31/functions/%00/invocations"),
    ("POST", "/2015-03-31/functions/" + "a" * 300 + "/invocations"),
    ("POST", "/2015-03-31/functions//invocations"),
    ("DELETE", "/2015-03-31/nothing"),
    ("POST", "/2015-03-31/functions/echo%2F..%2Fx/invocations"),
])
def test_odd_requests_never_get_a_500(daemon: Daemon, method: str, path: str) -> None:
    r = daemon.request(method, path, b"{}")
    assert 400 <= r.status < 500, r
    assert r.headers.get("x-amzn-ErrorType"), r


# --- metering --------------------------------------------------------------------------------


def test_every_invocation_has_exactly_one_complete_record(daemon: Daemon) -> None:
    r = daemon.invoke("returns", {"value": "metered"})
    record = daemon.record(r.headers["x-amzn-RequestId"])
    assert set(record) == {
        "request_id", "function", "version", "source", "source_arn", "invocation_type", "attempt",
        "start", "end", "duration_ms", "billed_duration_ms", "memory_mb", "max_memory_used_mb",
        "init_duration_ms", "cold", "outcome", "error_type", "worker_pid", "cost_usd"}
    assert record["function"] == "returns" and record["version"] == "$LATEST"
    assert record["source"] == "invoke" and record["invocation_type"] == "RequestResponse"
    assert record["source_arn"] is None
    assert record["outcome"] == "success" and record["error_type"] is None
    assert record["billed_duration_ms"] >= record["duration_ms"] > 0
    assert record["billed_duration_ms"] - record["duration_ms"] < 1
    assert str(record["start"]).endswith("Z") and record["start"] <= record["end"]
    assert record["memory_mb"] == 128 and record["max_memory_used_mb"] > 0
    expected = 128 / 1024 * record["billed_duration_ms"] / 1000 * 0.0000166667 + 0.0000002
    assert record["cost_usd"] == pytest.approx(expected)


def test_cold_start_is_recorded_once(daemon: Daemon) -> None:
    daemon.invoke("count", {})
    warm = daemon.invoke("count", {})
    record = daemon.record(warm.headers["x-amzn-RequestId"])
    assert record["cold"] is False and record["init_duration_ms"] is None
    colds = [r for r in daemon.records() if r["function"] == "count" and r["cold"]]
    assert len(colds) == 1 and colds[0]["init_duration_ms"] > 0


def test_concurrent_invocations_each_get_one_record(daemon: Daemon) -> None:
    ids: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        r = daemon.invoke("returns", {"value": i})
        assert r.json() == i
        with lock:
            ids.append(r.headers["x-amzn-RequestId"])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = daemon.records()
    by_id = {}
    for record in records:
        by_id.setdefault(record["request_id"], []).append(record)
    assert all(len(by_id[i]) == 1 for i in ids)
    assert len(set(ids)) == 40
    assert os.path.getsize(daemon.folder / "var" / "metering.jsonl") > 0
