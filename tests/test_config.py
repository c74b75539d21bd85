"""Table tests of ``router.config``: decoding, defaults, path resolution, overrides, error lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from router.config import (
    Config,
    ConfigError,
    FunctionConfig,
    MeteringConfig,
    ServerConfig,
    closed_to_others,
    describe,
    explain,
    load,
    parse,
    split_listen,
)

RUNTIME = f"python3.{sys.version_info.minor}"

def function(**fields: Any) -> dict[str, Any]:
    """One ``[[functions]]`` table: the three required keys plus ``fields``."""
    return {"name": "hello", "handler": "app.handler", "code": "code", **fields}


def folder(tmp_path: Path) -> Path:
    """The config folder with the ``code`` directory that ``function()`` names."""
    (tmp_path / "code").mkdir(parents=True, exist_ok=True)
    return tmp_path


# --- a valid config ----------------------------------------------------------------------------


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    base = folder(tmp_path)

    config = parse({"functions": [function()]}, base, {})

    assert config == Config(
        server=ServerConfig(
            listen="127.0.0.1:9000", data_dir=str(base / "var"), region="us-east-1",
            account_id="000000000000", shutdown_grace_s=30.0, access_log=False),
        metering=MeteringConfig(
            path=str(base / "var" / "metering.jsonl"), price_per_gb_second=0.0000166667,
            price_per_request=0.0000002, rotate_bytes=100 * 1024 * 1024, backups=5),
        functions=[FunctionConfig(
            name="hello", handler="app.handler", code=str(base / "code"), runtime=RUNTIME,
            memory_mb=128, timeout_s=3, min_workers=0, max_workers=4, max_queue=1000,
            keep_warm_s=300.0, env={})],
    )


def test_empty_config_has_no_functions(tmp_path: Path) -> None:
    config = parse({}, tmp_path, {})

    assert config.functions == []
    assert config.server.listen == "127.0.0.1:9000"
    assert config.server.data_dir == str(tmp_path / "var")


def test_every_key_set(tmp_path: Path) -> None:
    base = folder(tmp_path)
    raw = {
        "server": {"listen": "[::1]:8080", "data_dir": "state", "region": "eu-west-2",
                   "account_id": "123456789012", "shutdown_grace_s": 5, "access_log": True},
        "metering": {"path": "bill.jsonl", "price_per_gb_second": 1, "price_per_request": 0.5,
                     "rotate_bytes": 4096, "backups": 0},
        "functions": [function(runtime=RUNTIME, memory_mb=10240, timeout_s=900, min_workers=2,
                               max_workers=2, max_queue=0, keep_warm_s=0, env={"A": "1"})],
    }

    config = parse(raw, base, {})

    assert config.server == ServerConfig(
        listen="[::1]:8080", data_dir=str(base / "state"), region="eu-west-2",
        account_id="123456789012", shutdown_grace_s=5.0, access_log=True)
    assert config.metering == MeteringConfig(
        path=str(base / "bill.jsonl"), price_per_gb_second=1.0, price_per_request=0.5,
        rotate_bytes=4096, backups=0)
    assert config.functions == [FunctionConfig(
        name="hello", handler="app.handler", code=str(base / "code"), runtime=RUNTIME,
        memory_mb=10240, timeout_s=900, min_workers=2, max_workers=2, max_queue=0,
        keep_warm_s=0.0, env={"A": "1"})]


# --- paths and overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(("code", "data_dir", "metering_path", "want"), [
    ("code", "var", "var/m.jsonl", ("code", "var", "var/m.jsonl")),
    ("./code", "./state/", "../m.jsonl", ("code", "state", "../m.jsonl")),
    ("fns/code", "a/b", "a/b/c.jsonl", ("fns/code", "a/b", "a/b/c.jsonl")),
])
def test_relative_paths_resolve_against_config_folder(
        tmp_path: Path, code: str, data_dir: str, metering_path: str,
        want: tuple[str, str, str]) -> None:
    (tmp_path / code).mkdir(parents=True, exist_ok=True)
    raw = {"server": {"data_dir": data_dir}, "metering": {"path": metering_path},
           "functions": [function(code=code)]}

    config = parse(raw, tmp_path, {})

    assert config.functions[0].code == str(tmp_path / want[0])
    assert config.server.data_dir == str(tmp_path / want[1])
    assert config.metering.path == str(tmp_path / want[2])


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    code = tmp_path / "elsewhere" / "code"
    code.mkdir(parents=True)
    raw = {"server": {"data_dir": "/srv/headwater"}, "metering": {"path": "/var/log/m.jsonl"},
           "functions": [function(code=str(code))]}

    config = parse(raw, tmp_path / "conf", {})

    assert config.functions[0].code == str(code)
    assert config.server.data_dir == "/srv/headwater"
    assert config.metering.path == "/var/log/m.jsonl"


@pytest.mark.parametrize(("server", "environ", "listen", "want"), [
    ({}, {}, None, "127.0.0.1:9000"),
    ({"listen": "0.0.0.0:8000", "tokens": ["t"]}, {}, None, "0.0.0.0:8000"),
    ({"listen": "0.0.0.0:8000"}, {"HEADWATER_LISTEN": "127.0.0.1:7000"}, None, "127.0.0.1:7000"),
    ({}, {"HEADWATER_LISTEN": "[::1]:7000"}, None, "[::1]:7000"),
    ({"listen": "0.0.0.0:8000"}, {"HEADWATER_LISTEN": "127.0.0.1:7000"}, "localhost:6000",
     "localhost:6000"),
    ({}, {}, "localhost:6000", "localhost:6000"),
    # Other variables are ignored.
    ({}, {"LISTEN": "127.0.0.1:1", "HEADWATER_PORT": "2"}, None, "127.0.0.1:9000"),
])
def test_listen_override_order(
        tmp_path: Path, server: dict[str, str], environ: dict[str, str], listen: str | None,
        want: str) -> None:
    config = parse({"server": server}, tmp_path, environ, listen)

    assert config.server.listen == want


@pytest.mark.parametrize(("environ", "data_dir", "metering_path"), [
    ({}, "cfg/var", "cfg/var/metering.jsonl"),
    ({"HEADWATER_DATA_DIR": "state"}, "cfg/state", "cfg/var/metering.jsonl"),
    ({"HEADWATER_DATA_DIR": "/srv/data"}, "/srv/data", "cfg/var/metering.jsonl"),
    ({"HEADWATER_METERING_PATH": "m.jsonl"}, "cfg/var", "cfg/m.jsonl"),
    ({"HEADWATER_METERING_PATH": "/log/m.jsonl"}, "cfg/var", "/log/m.jsonl"),
    ({"HEADWATER_DATA_DIR": "d", "HEADWATER_METERING_PATH": "d/m.jsonl"},
     "cfg/d", "cfg/d/m.jsonl"),
])
def test_path_overrides_from_environment(
        tmp_path: Path, environ: dict[str, str], data_dir: str, metering_path: str) -> None:
    base = tmp_path / "cfg"
    raw = {"server": {"data_dir": "var"}, "metering": {"path": "var/metering.jsonl"}}

    config = parse(raw, base, environ)

    assert config.server.data_dir == str(tmp_path / data_dir)
    assert config.metering.path == str(tmp_path / metering_path)


def test_listen_override_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse({}, tmp_path, {"HEADWATER_LISTEN": "nope"})

    assert str(e.value) == 'server.listen: expected HOST:PORT, got "nope"'


# --- invalid configs ---------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "message"), [
    # Types and ranges, inside functions (the index is kept).
    pytest.param(
        {"functions": [function(), function(name="b", timeout_s="x")]},
        'functions[1].timeout_s: expected an integer from 1 to 900, got "x"',
        id="timeout-string"),
    pytest.param(
        {"functions": [function(timeout_s=0)]},
        "functions[0].timeout_s: expected an integer from 1 to 900, got 0",
        id="timeout-zero"),
    pytest.param(
        {"functions": [function(timeout_s=901)]},
        "functions[0].timeout_s: expected an integer from 1 to 900, got 901",
        id="timeout-too-big"),
    pytest.param(
        {"functions": [function(timeout_s=True)]},
        "functions[0].timeout_s: expected an integer from 1 to 900, got true",
        id="timeout-bool"),
    pytest.param(
        {"functions": [function(memory_mb=64)]},
        "functions[0].memory_mb: expected an integer from 128 to 10240, got 64",
        id="memory-too-small"),
    pytest.param(
        {"functions": [function(memory_mb=10241)]},
        "functions[0].memory_mb: expected an integer from 128 to 10240, got 10241",
        id="memory-too-big"),
    pytest.param(
        {"functions": [function(keep_warm_s=-1)]},
        "functions[0].keep_warm_s: expected a number >= 0, got -1",
        id="keep-warm-negative"),
    pytest.param(
        {"functions": [function(name="my fn")]},
        "functions[0].name: expected a name of 1 to 64 letters, digits, '-' or '_', got \"my fn\"",
        id="name-space"),
    pytest.param(
        {"functions": [function(name="a" * 65)]},
        "functions[0].name: expected a name of 1 to 64 letters, digits, '-' or '_', "
        f'got "{"a" * 65}"',
        id="name-too-long"),
    pytest.param(
        {"functions": [function(name="fn\n")]},
        "functions[0].name: expected a name of 1 to 64 letters, digits, '-' or '_', got \"fn\\n\"",
        id="name-trailing-newline"),
    pytest.param(
        {"functions": [function(runtime="node18")]},
        'functions[0].runtime: expected a runtime such as "python3.11", "nodejs20.x", '
        '"provided.al2023", got "node18"',
        id="runtime-pattern"),
    pytest.param(
        {"functions": [function(handler="app handler")]},
        'functions[0].handler: expected a handler such as "app.handler" (module.function), '
        'got "app handler"',
        id="handler-space"),
    pytest.param(
        {"functions": [function(env={"A": 1})]},
        'functions[0].env: expected a table of strings, got {"A": 1}',
        id="env-value-not-string"),
    pytest.param(
        {"functions": [function(env="A=1")]},
        'functions[0].env: expected a table of strings, got "A=1"',
        id="env-not-table"),
    pytest.param(
        {"functions": ["hello"]},
        'functions[0]: expected a table, got "hello"',
        id="function-not-table"),
    # Unknown and missing keys.
    pytest.param({"bogus": 1}, "bogus: unknown key", id="unknown-top-level"),
    pytest.param({"server": {"bogus": 1}}, "server.bogus: unknown key", id="unknown-server"),
    pytest.param({"metering": {"port": 1}}, "metering.port: unknown key", id="unknown-metering"),
    pytest.param(
        {"functions": [function(bogus=1)]}, "functions[0].bogus: unknown key",
        id="unknown-function"),
    pytest.param(
        {"functions": [{"name": "hello", "code": "code"}]},
        "functions[0].handler: required key is missing",
        id="missing-handler"),
    pytest.param(
        {"functions": [function(), {"handler": "app.handler", "code": "code"}]},
        "functions[1].name: required key is missing",
        id="missing-name"),
    # Types outside functions.
    pytest.param({"functions": {"name": "x"}}, 'functions: expected an array, got {"name": "x"}',
                 id="functions-not-array"),
    pytest.param({"server": "x"}, 'server: expected a table, got "x"', id="server-not-table"),
    pytest.param({"server": {"listen": 9000}}, "server.listen: expected a string, got 9000",
                 id="listen-not-string"),
    pytest.param({"server": {"region": "mars"}},
                 'server.region: expected an AWS region name such as "us-east-1", got "mars"',
                 id="region"),
    pytest.param({"server": {"account_id": "123"}},
                 'server.account_id: expected a 12-digit account id, got "123"', id="account-id"),
    pytest.param({"server": {"shutdown_grace_s": -1}},
                 "server.shutdown_grace_s: expected a number >= 0, got -1", id="grace-negative"),
    pytest.param({"server": {"access_log": "yes"}},
                 'server.access_log: expected true or false, got "yes"', id="access-log-string"),
    pytest.param({"metering": {"rotate_bytes": 1}},
                 "metering.rotate_bytes: expected an integer from 4096 to 1099511627776, got 1",
                 id="rotate-too-small"),
    pytest.param({"metering": {"price_per_request": -0.1}},
                 "metering.price_per_request: expected a number >= 0, got -0.1",
                 id="price-negative"),
    # Rules check() enforces after decoding.
    pytest.param({"server": {"listen": "nope"}}, 'server.listen: expected HOST:PORT, got "nope"',
                 id="listen-nope"),
    pytest.param({"server": {"listen": "127.0.0.1:65536"}},
                 'server.listen: expected HOST:PORT, got "127.0.0.1:65536"', id="listen-port"),
    pytest.param({"functions": [function(), function(name="other"), function()]},
                 'functions[2].name: duplicate function name "hello"', id="duplicate-name"),
    pytest.param({"functions": [function(), function(name="b", runtime="python3.1")]},
                 'functions[1].runtime: "python3.1" was not found on PATH', id="runtime-missing"),
    pytest.param({"functions": [function(code="missing")]},
                 'functions[0].code: "{base}/missing" is not a directory', id="code-missing"),
    pytest.param({"functions": [function(code="file.txt")]},
                 'functions[0].code: "{base}/file.txt" is not a directory', id="code-is-file"),
    pytest.param({"functions": [function(min_workers=3, max_workers=2)]},
                 "functions[0].min_workers: expected at most max_workers (2), got 3",
                 id="min-above-max"),
    pytest.param({"functions": [function(max_workers=0, min_workers=1)]},
                 "functions[0].min_workers: expected at most max_workers (0), got 1",
                 id="min-above-zero-max"),
])
def test_invalid_config_message(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    base = folder(tmp_path)
    (base / "file.txt").write_text("not a folder")

    with pytest.raises(ConfigError) as e:
        parse(raw, base, {})

    assert str(e.value) == message.replace("{base}", str(base))


# --- load() ------------------------------------------------------------------------------------


def test_load_reads_toml_relative_to_its_folder(tmp_path: Path) -> None:
    base = folder(tmp_path / "etc")
    path = base / "config.toml"
    path.write_text(
        '[server]\nlisten = "127.0.0.1:9100"\n\n'
        '[[functions]]\nname = "hello"\nhandler = "app.handler"\ncode = "code"\n'
        'timeout_s = 10\nenv = { GREETING = "hi" }\n')

    config = load(path, {"HEADWATER_DATA_DIR": "data"})

    assert config.server.listen == "127.0.0.1:9100"
    assert config.server.data_dir == str(base / "data")
    assert config.metering.path == str(base / "var" / "metering.jsonl")
    assert [(f.name, f.code, f.timeout_s, f.env) for f in config.functions] == [
        ("hello", str(base / "code"), 10, {"GREETING": "hi"})]


def test_load_listen_argument_wins(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nlisten = "127.0.0.1:9100"\n')

    config = load(path, {"HEADWATER_LISTEN": "127.0.0.1:9200"}, listen="127.0.0.1:9300")

    assert config.server.listen == "127.0.0.1:9300"


def test_load_without_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")

    assert load(path) == Config(
        server=ServerConfig(data_dir=str(tmp_path / "var")),
        metering=MeteringConfig(path=str(tmp_path / "var" / "metering.jsonl")))


@pytest.mark.parametrize(("text", "line"), [
    ("[server\n", "line 1"),
    ('[server]\nlisten = "127.0.0.1:9000\n', "line 2"),
    ("[server]\nlisten 9000\n", "line 2"),
    ("[[functions]]\nname = 'a'\nname = 'b'\n", "line 3"),
])
def test_load_invalid_toml(tmp_path: Path, text: str, line: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)

    with pytest.raises(ConfigError) as e:
        load(path, {})

    message = str(e.value)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert line in message
    assert "\n" not in message


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(ConfigError) as e:
        load(path, {})

    assert str(e.value) == f"{path}: cannot read: No such file or directory"


def test_load_reports_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[server]\nlisten = "nope"\n')

    with pytest.raises(ConfigError) as e:
        load(path, {})

    assert str(e.value) == 'server.listen: expected HOST:PORT, got "nope"'


# --- split_listen --------------------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "want"), [
    ("127.0.0.1:9000", ("127.0.0.1", 9000)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:9000", ("::1", 9000)),
    ("[::]:80", ("::", 80)),
    ("[::ffff:127.0.0.1]:8080", ("::ffff:127.0.0.1", 8080)),
    ("example.com:00080", ("example.com", 80)),
])
def test_split_listen(listen: str, want: tuple[str, int]) -> None:
    assert split_listen(listen) == want


@pytest.mark.parametrize("listen", [
    "", "nope", "9000", ":9000", "host:", "host:65536", "host:123456", "host:-1", "host:port",
    "::1:9000", "[::1]", "[::1]9000", "[host]:80", "a:b:80", "127.0.0.1:9000 ",
])
def test_split_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError) as e:
        split_listen(listen)

    assert e.value.args == (listen,)


# --- explain / describe ------------------------------------------------------------------------


@pytest.mark.parametrize(("message", "raw", "want"), [
    ("Object contains unknown field `bogus`", {"bogus": 1}, "bogus: unknown key"),
    ("Object contains unknown field `x` - at `$.server`", {"server": {"x": 1}},
     "server.x: unknown key"),
    ("Object missing required field `code` - at `$.metering`", {}, "metering.code: "
     "required key is missing"),
    ("Expected `object`, got `str` - at `$.metering`", {"metering": "m"},
     'metering: expected a table, got "m"'),
    ("Expected `str`, got `int` - at `$.server.region`", {"server": {"region": 5}},
     'server.region: expected an AWS region name such as "us-east-1", got 5'),
    ("Expected `object`, got `array`", [1, 2], "(top level): expected a table, got [1, 2]"),
    ("Expected `int` >= 0, got `int` - at `$.nowhere.deeper`", {},
     "nowhere.deeper: expected a valid value, got null"),
    pytest.param(
        "Expected `int` <= 900, got `int` - at `$.functions[1].timeout_s`",
        {"functions": [{}, {"timeout_s": 1000}]},
        "functions[1].timeout_s: expected an integer from 1 to 900, got 1000",
        id="index-in-path"),
    pytest.param(
        "Object contains unknown field `bogus` - at `$.functions[0]`",
        {"functions": [{"bogus": 1}]},
        "functions[0].bogus: unknown key",
        id="index-before-unknown-key"),
])
def test_explain(message: str, raw: Any, want: str) -> None:
    assert explain(message, raw) == want


@pytest.mark.parametrize(("tp", "want"), [
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (bool, "true or false"),
    (dict[str, str], "a table of strings"),
    (dict[str, int], "a table of integers"),
    (list[FunctionConfig], "an array"),
    (ServerConfig, "a table"),
    (Config, "a table"),
    (bytes, "a valid value"),
])
def test_describe(tp: Any, want: str) -> None:
    assert describe(tp) == want


def test_error_message_quotes_value_as_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        parse({"server": {"region": 'a"b\nc'}}, tmp_path, {})

    assert str(e.value) == (
        'server.region: expected an AWS region name such as "us-east-1", got "a\\"b\\nc"')
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(("server", "message"), [
    ({"listen": "0.0.0.0:9000", "auth": "none", "tokens": ["t"]},
     'server.auth: "none" is allowed only when listening on loopback, not on 0.0.0.0'),
    ({"listen": "0.0.0.0:9000"},
     "server.access_keys: listening on 0.0.0.0 needs credentials: configure access_keys or tokens"),
    ({"listen": "[::]:9000", "auth": "auto"},
     "server.access_keys: listening on :: needs credentials: configure access_keys or tokens"),
    ({"auth": "required"}, 'server.auth: "required" needs access_keys or tokens to be configured'),
    ({"auth": "maybe"}, 'server.auth: expected "auto", "required" or "none", got "maybe"'),
])
def test_auth_rules(tmp_path: Path, server: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"server": server}, tmp_path, {})
    assert str(caught.value) == message


@pytest.mark.parametrize("server", [
    {"listen": "127.0.0.1:9000", "auth": "none"},
    {"listen": "[::1]:9000"},
    {"listen": "localhost:9000", "auth": "auto"},
    {"listen": "0.0.0.0:9000", "access_keys": {"AKID": "secret"}},
    {"listen": "0.0.0.0:9000", "auth": "required", "tokens": ["t"]},
])
def test_auth_accepted(tmp_path: Path, server: dict[str, object]) -> None:
    parse({"server": server}, tmp_path, {})


def test_warm_floors_may_not_fill_the_daemon(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    runtime = f"python3.{sys.version_info.minor}"
    functions = [{"name": f"f{i}", "handler": "app.handler", "code": str(code), "runtime": runtime,
                  "min_workers": 3, "max_workers": 3} for i in range(2)]
    with pytest.raises(ConfigError) as caught:
        parse({"server": {"max_workers": 5}, "functions": functions}, tmp_path, {})
    assert str(caught.value) == ("server.max_workers: the functions' min_workers add up to 6, "
                                 "more than max_workers (5)")
    parse({"server": {"max_workers": 6}, "functions": functions}, tmp_path, {})


@pytest.mark.parametrize(("folder_mode", "module_mode", "closed"), [
    (0o755, 0o644, None),
    (0o700, 0o644, "code"),
    (0o751, 0o644, "code"),  # traversable but not listable: still closed (Python lists it)
    (0o755, 0o600, "code/app.py"),
])
def test_a_root_daemon_refuses_code_its_functions_cannot_read(
        tmp_path: Path, folder_mode: int, module_mode: int, closed: str | None) -> None:
    base = folder(tmp_path)
    (base / "code" / "app.py").write_text("def handler(e, c): pass\n")
    (base / "code" / "app.py").chmod(module_mode)
    (base / "code").chmod(folder_mode)
    found = closed_to_others(base / "code", "app.handler")
    if closed is None:
        assert found is None
    else:
        assert found == f'"{base / closed}" (mode {(folder_mode if closed == "code" else module_mode):04o})'
        if os.geteuid() == 0:  # only a root daemon gives functions uids of their own
            with pytest.raises(ConfigError, match=r"functions\[0\]\.code: .*\(chmod -R o\+rX\)$"):
                parse({"functions": [function()]}, base, {})
