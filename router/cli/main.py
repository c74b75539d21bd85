"""The ``headwater`` command: run the daemon, and work with functions through its Lambda API."""

from __future__ import annotations

import argparse
import base64
import fnmatch
import io
import json
import logging
import os
import platform
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from router import tls
from router.logs.format import defang_text

DEFAULT_URL = "http://127.0.0.1:9000"


class ApiError(Exception):
    """A request the daemon refused or could not take; the message is for the user."""


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headwater", description="Run Lambda-style functions.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", default=environ.get("HEADWATER_CONFIG", "config.toml"),
                       help="the configuration file (default: ./config.toml, or $HEADWATER_CONFIG)")
    serve.add_argument("--listen", metavar="HOST:PORT",
                       help="the address to listen on (overrides [server].listen)")
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="the log's format on stderr (overrides [server].log_format)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                       help="the daemon's least level logged (overrides [server].log_level)")

    def client(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--url", help="the daemon's address (default: $HEADWATER_URL, else that of "
                       "the daemon running on ./config.toml or $HEADWATER_CONFIG, from its "
                       f"data_dir/daemon.json, else {DEFAULT_URL})")
        p.add_argument("--token", default=environ.get("HEADWATER_TOKEN"),
                       help="a bearer token (or $HEADWATER_TOKEN); without one, requests are "
                            "signed with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set")
        return p

    invoke = client(commands.add_parser("invoke", help="invoke a function, print its response"))
    invoke.add_argument("name")
    source = invoke.add_mutually_exclusive_group()
    source.add_argument("--payload", default="{}",
                        help="the event as JSON, or @FILE to read it from a file")
    source.add_argument("--event", metavar="FILE", help="read the event from FILE")
    invoke.add_argument("--log", action="store_true",
                        help="also print the invocation's log (its last 4 KB) to stderr")
    invoke.add_argument("--async", dest="asynchronous", action="store_true",
                        help="invoke asynchronously (InvocationType Event): print the request id "
                             "once the event is stored, and return")

    init = commands.add_parser("init", help="create a function folder from a blueprint")
    init.add_argument("name")
    # scaffold.BLUEPRINTS and events.KINDS written out: importing those modules would add about
    # 30 ms to the start of every command, a third of it.
    init.add_argument("--blueprint", default="hello", help="hello, http-api, s3-resize-image, "
                      "sqs-consumer, scheduled (Python), nodejs-hello (Node.js) or provided-shell "
                      "(a shell bootstrap) (default: hello)")
    init.add_argument("--dir", default=".", help="where to create the folder (default: here)")

    deploy = client(commands.add_parser("deploy", help="zip a folder and deploy it"))
    deploy.add_argument("dir")
    deploy.add_argument("--name", required=True)
    deploy.add_argument("--runtime", default=f"python3.{sys.version_info.minor}")
    deploy.add_argument("--handler", default="app.handler")
    deploy.add_argument("--memory", type=int, help="memory in MB (128-10240)")
    deploy.add_argument("--timeout", type=int, help="timeout in seconds (1-900)")
    deploy.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="an environment variable (repeatable)")
    deploy.add_argument("--no-build", action="store_true",
                        help="package the folder as it is, without installing its requirements.txt")
    deploy.add_argument("--function-url", choices=["NONE", "AWS_IAM"], metavar="AUTH",
                        help="give the function a function URL: NONE (open to anyone) or AWS_IAM "
                             "(SigV4 with the daemon's access keys); without it, a new function "
                             "has none")

    client(commands.add_parser("functions", help="list the daemon's functions"))

    logs = client(commands.add_parser("logs", help="print a function's recent log (what the "
                                      "daemon keeps of it in memory)"))
    logs.add_argument("function")
    logs.add_argument("--since", help="only lines of the last 90s, 10m, 24h, 7d …")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="then print new lines as they come, until interrupted")
    logs.add_argument("--format", choices=["text", "json"], default="text",
                      help="text (time, request id, message) or json (one object a line)")

    dlq = commands.add_parser("dlq", help="asynchronous events that failed: list, show, redrive")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = client(dlq_commands.add_parser("list", help="list dead letters, oldest first"))
    listing.add_argument("function", nargs="?", help="only this function's")
    listing.add_argument("--max", type=int, default=100, help="at most this many (default 100)")
    show = client(dlq_commands.add_parser("show", help="print a dead letter as JSON (its payload "
                                                       "and destination record included)"))
    show.add_argument("id", help="the event's request id")
    again = client(dlq_commands.add_parser("redrive", help="run dead letters again as new "
                                                           "asynchronous events"))
    again.add_argument("function")
    again.add_argument("--id", action="append", dest="ids", metavar="ID",
                       help="only this dead letter (repeatable; default: all of the function's)")

    reload = commands.add_parser("reload", help="make the running daemon re-read its config")
    reload.add_argument("--config", default=environ.get("HEADWATER_CONFIG", "config.toml"),
                        help="the daemon's configuration (its data_dir names the daemon)")

    usage = commands.add_parser("usage", help="add up the metering records")
    usage.add_argument("--config", default=environ.get("HEADWATER_CONFIG", "config.toml"),
                       help="the daemon's configuration, which names the metering file")
    usage.add_argument("--metering", metavar="PATH", help="the metering file itself (its rotated "
                       "copies PATH.1 … are read too)")
    usage.add_argument("--since", help="only records that started in the last 90s, 10m, 24h, 7d …")
    usage.add_argument("--by", choices=["function", "source", "day"], default="function")
    usage.add_argument("--format", choices=["table", "json", "csv"], default="table")

    event = commands.add_parser("event", help="sample events")
    event_commands = event.add_subparsers(dest="event_command", required=True)
    generate = event_commands.add_parser("generate", help="print a realistic sample event")
    generate.add_argument("kind", choices=["s3-put", "s3-delete", "sqs", "api-v2", "schedule"])
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = build_parser(environ).parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args, environ)
    if args.command == "init":
        return cmd_init(args)
    if args.command == "usage":
        return cmd_usage(args, environ)
    if args.command == "reload":
        return cmd_reload(args, environ)
    if args.command == "event":
        from sources.samples import sample_event

        print(json.dumps(sample_event(args.kind), indent=2))
        return 0
    url, origin, cafile = locate(args.url, environ)
    api = Api(url, args.token, environ, origin, cafile)
    try:
        return COMMANDS[args.command](args, api)
    except ApiError as e:
        print(f"headwater: {e}", file=sys.stderr)
        return 1


def cmd_serve(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from router import config as config_module  # the daemon's imports stay out of the client
    from router.logs.format import Clock, decide, install

    # Until the configuration names a format: its errors are for a person at a terminal.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def read() -> config_module.Config:  # at start and at SIGHUP; raises ConfigError
        return config_module.load(args.config, environ, listen=args.listen,
                                  log_format=args.log_format, log_level=args.log_level)

    try:
        config = read()
    except config_module.ConfigError as e:
        print(f"headwater: invalid configuration {args.config}: {e}", file=sys.stderr)
        return 2
    install(decide(config.server.log_format, environ), config.server.log_level, Clock())

    import uvloop

    from router.server import serve

    return uvloop.run(serve(config, environ, read))


def cmd_init(args: argparse.Namespace) -> int:
    from router.cli.scaffold import ScaffoldError, create, launch_of

    try:
        folder = create(args.name, args.blueprint, Path(args.dir))
    except ScaffoldError as e:
        print(f"headwater: {e}", file=sys.stderr)
        return 2
    runtime, handler = launch_of(args.blueprint)
    print(f"created {folder} from the {args.blueprint} blueprint; deploy it with:\n"
          f"  headwater deploy {folder} --name {args.name} --runtime {runtime} --handler {handler}")
    return 0


# --- the API client --------------------------------------------------------------------------


def locate(url: str | None, environ: Mapping[str, str]) -> tuple[str, str, str | None]:
    """The daemon's address, where it was found (for the message when it cannot be reached):
    --url, $HEADWATER_URL, the daemon.json of the daemon serving ./config.toml (or
    $HEADWATER_CONFIG), or the default; and a certificate to trust besides the system's CAs for
    https: the daemon's own from daemon.json, else $AWS_CA_BUNDLE as the AWS CLI reads it."""
    bundle = environ.get("AWS_CA_BUNDLE")
    if url:
        return url, "--url", bundle
    if environ.get("HEADWATER_URL"):
        return environ["HEADWATER_URL"], "$HEADWATER_URL", bundle
    from router import daemonfile
    from router.config import data_dir_of

    config = Path(environ.get("HEADWATER_CONFIG", "config.toml"))
    data_dir = data_dir_of(config, environ)
    if data_dir is None:
        return DEFAULT_URL, f"the default: no --url, no $HEADWATER_URL, and no {config} here", bundle
    state = daemonfile.read(data_dir)
    if state is None:
        return DEFAULT_URL, (f"the default: no --url, no $HEADWATER_URL, and no running daemon "
                             f"recorded in {data_dir / daemonfile.NAME}"), bundle
    return state.url, str(data_dir / daemonfile.NAME), state.cert or bundle


class Api:
    """Requests to the daemon's Lambda API, with a bearer token or a SigV4 signature."""

    def __init__(self, url: str, token: str | None, environ: Mapping[str, str],
                 origin: str = "--url", cafile: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.environ = environ
        self.origin = origin  # where the address came from
        self.context = tls.client_context(cafile) if self.url.startswith("https:") else None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Mapping[str, str], bytes]:
        headers = {"Content-Type": "application/json", **(headers or {})}
        url = self.url + path
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.environ.get("AWS_ACCESS_KEY_ID") and self.environ.get("AWS_SECRET_ACCESS_KEY"):
            headers = self._signed(method, url, body, headers)
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=960, context=self.context) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                data = json.loads(raw)
                message = data.get("message") or data.get("Message") or raw.decode()
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")
            raise ApiError(f"{e.code} {e.headers.get('x-amzn-ErrorType', e.reason)}: {message}") \
                from None
        except urllib.error.URLError as e:
            raise ApiError(f"cannot reach {self.url} ({self.origin}): {e.reason}") from None

    def _signed(self, method: str, url: str, body: bytes | None,
                headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        credentials = Credentials(self.environ["AWS_ACCESS_KEY_ID"],
                                  self.environ["AWS_SECRET_ACCESS_KEY"],
                                  self.environ.get("AWS_SESSION_TOKEN"))
        region = self.environ.get("AWS_REGION") or self.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        request = AWSRequest(method=method, url=url, data=body or b"", headers=headers)
        SigV4Auth(credentials, "lambda", region).add_auth(request)
        return dict(request.headers.items())


def read_payload(value: str) -> bytes:
    if value.startswith("@"):
        return Path(value[1:]).read_bytes()
    return value.encode()


def cmd_invoke(args: argparse.Namespace, api: Api) -> int:
    try:
        payload = Path(args.event).read_bytes() if args.event else read_payload(args.payload)
    except OSError as e:
        print(f"headwater: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    if args.asynchronous:
        _, headers, _ = api.call("POST", f"/2015-03-31/functions/{args.name}/invocations", payload,
                                 {"X-Amz-Invocation-Type": "Event"})
        print(headers.get("x-amzn-RequestId", ""))
        return 0
    _, headers, body = api.call("POST", f"/2015-03-31/functions/{args.name}/invocations", payload,
                                {"X-Amz-Log-Type": "Tail" if args.log else "None"})
    if args.log and headers.get("X-Amz-Log-Result"):
        sys.stderr.write(base64.b64decode(headers["X-Amz-Log-Result"]).decode(errors="replace"))
    sys.stdout.write(body.decode(errors="replace") + "\n")
    return 1 if headers.get("X-Amz-Function-Error") else 0


# Never part of a package: version control, caches, secrets (.env files) and the ignore file;
# virtualenvs too, found by their pyvenv.cfg whatever their name.
ALWAYS_IGNORED = [".git/", ".hg/", ".svn/", "__pycache__/", "*.pyc", ".env", ".env.*", ".venv/",
                  ".headwaterignore", ".DS_Store"]
IGNORE_FILE = ".headwaterignore"


def read_ignore(text: str) -> list[str]:
    """A .headwaterignore's patterns: one a line, blank lines and # comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def ignored(rel: str, is_dir: bool, patterns: Sequence[str]) -> bool:
    """Whether the entry at ``rel`` (a path relative to the folder, with /) is left out. A pattern
    is a glob: with no / it matches a name at any depth, with a leading / or a / inside it the
    whole path from the folder; a trailing / makes it match folders only."""
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/") and not is_dir:
            continue
        glob = pattern.rstrip("/")
        if "/" in glob:
            if fnmatch.fnmatchcase(rel, glob.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, glob):
            return True
    return False


def package(folder: Path) -> list[tuple[str, Path]]:
    """What ``headwater deploy`` packages of ``folder``: (name in the zip, path), in order. Links
    are entries of their own (never followed); what ``ignored`` says is left out."""
    patterns = list(ALWAYS_IGNORED)
    if (folder / IGNORE_FILE).is_file():
        patterns += read_ignore((folder / IGNORE_FILE).read_text())
    found = []
    for top, dirs, files in os.walk(folder):  # does not follow links to folders
        base = Path(top)
        prefix = base.relative_to(folder).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        kept = []
        for name in sorted(dirs):
            path = base / name
            if path.is_symlink():
                if not ignored(prefix + name, True, patterns):
                    found.append((prefix + name, path))
            elif not ignored(prefix + name, True, patterns) and not (path / "pyvenv.cfg").exists():
                kept.append(name)
        dirs[:] = kept
        found += [(prefix + name, base / name) for name in sorted(files)
                  if not ignored(prefix + name, False, patterns)]
    return sorted(found)


def pip_command(python: str, requirements: Path, target: Path, runtime: str,
                machine: str) -> list[str]:
    """``pip install --target`` of a function's requirements, as ``sam build`` does: wheels only,
    for the runtime's Python and Lambda's platform, whatever the machine deploying has."""
    version = runtime.removeprefix("python")
    return [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(target), "-r", str(requirements), "--only-binary=:all:",
            "--platform", f"manylinux2014_{machine}", "--implementation", "cp",
            "--python-version", version]


def build_requirements(folder: Path, runtime: str, target: Path) -> str | None:
    """Install ``folder``'s requirements.txt into ``target``; the error if pip fails."""
    command = pip_command(sys.executable, folder / "requirements.txt", target, runtime,
                          platform.machine())
    done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        return (done.stderr.strip() or done.stdout.strip() or f"pip exited {done.returncode}")
    return None


def zip_folder(folder: Path, built: Path | None = None) -> bytes:
    """The folder as a deployment package: files relative to it, links stored as links; then
    what was ``built`` from its requirements, at the root beside them (the folder's own files win)."""
    buffer = io.BytesIO()
    entries = package(folder)
    if built is not None:
        own = {name for name, _ in entries}
        entries += [(name, path) for name, path in package(built) if name not in own]
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries:
            if path.is_symlink():
                info = zipfile.ZipInfo(name)
                info.create_system = 3  # Unix, so that the mode below reads as a link
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(info, os.readlink(path))
            else:
                archive.write(path, name)
    return buffer.getvalue()


def cmd_deploy(args: argparse.Namespace, api: Api) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"headwater: {folder} is not a folder", file=sys.stderr)
        return 2
    env = dict(item.split("=", 1) for item in args.env if "=" in item)
    settings: dict[str, object] = {"Runtime": args.runtime, "Handler": args.handler}
    if args.memory is not None:
        settings["MemorySize"] = args.memory
    if args.timeout is not None:
        settings["Timeout"] = args.timeout
    if env:
        settings["Environment"] = {"Variables": env}
    with tempfile.TemporaryDirectory(prefix="headwater-build-") as build:
        built = None
        if (folder / "requirements.txt").is_file() and args.runtime.startswith("python") \
                and not args.no_build:
            built = Path(build)
            if (error := build_requirements(folder, args.runtime, built)) is not None:
                print(f"headwater: cannot build {folder / 'requirements.txt'}:\n{error}",
                      file=sys.stderr)
                return 1
        code = base64.b64encode(zip_folder(folder, built)).decode()
    try:
        _, _, body = api.call("GET", f"/2015-03-31/functions/{args.name}")
        exists = True
    except ApiError as e:
        if not str(e).startswith("404"):
            raise
        exists = False
    if exists:
        api.call("PUT", f"/2015-03-31/functions/{args.name}/code",
                 json.dumps({"ZipFile": code}).encode())
        _, _, body = api.call("PUT", f"/2015-03-31/functions/{args.name}/configuration",
                              json.dumps(settings).encode())
    else:
        _, _, body = api.call("POST", "/2015-03-31/functions", json.dumps({
            "FunctionName": args.name, "Role": "arn:aws:iam::000000000000:role/headwater",
            "Code": {"ZipFile": code}, **settings}).encode())
    config = json.loads(body)
    url = function_url(api, args.name, args.function_url) if args.function_url else None
    print(f"{'updated' if exists else 'created'} {config['FunctionName']} "
          f"({config['CodeSize']} bytes, {config['CodeSha256']})"
          + (f"; function URL ({args.function_url}): {url}" if url else ""))
    return 0


def function_url(api: Api, name: str, auth: str) -> str:
    """Create the function's URL config with ``auth``, or update the one it has."""
    body = json.dumps({"AuthType": auth}).encode()
    path = f"/2021-10-31/functions/{name}/url"
    try:
        _, _, answer = api.call("POST", path, body)
    except ApiError as e:
        if not str(e).startswith("409"):
            raise
        _, _, answer = api.call("PUT", path, body)
    return str(json.loads(answer)["FunctionUrl"])


def cmd_functions(args: argparse.Namespace, api: Api) -> int:
    marker = ""
    rows = [("NAME", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "LAST MODIFIED")]
    while True:
        _, _, body = api.call("GET", f"/2015-03-31/functions/?Marker={marker}")
        page = json.loads(body)
        rows += [(f["FunctionName"], f["Runtime"], f["Handler"], str(f["MemorySize"]),
                  str(f["Timeout"]), f["LastModified"]) for f in page["Functions"]]
        marker = page.get("NextMarker", "")
        if not marker:
            break
    print_table(rows)
    return 0


def cmd_dlq(args: argparse.Namespace, api: Api) -> int:
    if args.dlq_command == "show":
        _, _, body = api.call("GET", f"/headwater/dead-letters/{urllib.parse.quote(args.id)}")
        print(json.dumps(json.loads(body), indent=2))
        return 0
    if args.dlq_command == "redrive":
        wanted: dict[str, object] = {"FunctionName": args.function}
        if args.ids:
            wanted["RequestIds"] = args.ids
        _, _, body = api.call("POST", "/headwater/dead-letters/redrive", json.dumps(wanted).encode())
        ids = json.loads(body)["RequestIds"]
        print(f"redriven: {len(ids)} event(s)")
        for request_id in ids:
            print(request_id)
        return 0 if ids or not args.ids else 1
    query = urllib.parse.urlencode({"MaxItems": args.max, **({"FunctionName": args.function}
                                                              if args.function else {})})
    _, _, body = api.call("GET", f"/headwater/dead-letters?{query}")
    rows = [("REQUEST ID", "FUNCTION", "CONDITION", "INVOKES", "SOURCE", "DEAD AT")]
    rows += [(d["RequestId"], d["FunctionName"], d["Condition"], str(d["ApproximateInvokeCount"]),
              d["Source"], d["DeadAt"]) for d in json.loads(body)["DeadLetters"]]
    print_table(rows)
    return 0


FOLLOW_WAIT_S = 20  # each long poll of --follow; the daemon answers sooner when a line comes


def cmd_logs(args: argparse.Namespace, api: Api) -> int:
    from router.metering.usage import since_seconds

    try:
        start_ms = int((time.time() - since_seconds(args.since)) * 1000) if args.since else 0
    except ValueError as e:
        print(f"headwater: --since: {e}", file=sys.stderr)
        return 2
    path = f"/headwater/logs/{urllib.parse.quote(args.function, safe='')}"
    token = "0"
    wait = 0
    try:
        while True:
            query = urllib.parse.urlencode({"StartTime": start_ms, "After": token, "Wait": wait})
            _, _, body = api.call("GET", f"{path}?{query}")
            answer = json.loads(body)
            for event in answer["Events"]:
                print(log_line(event, args.format), flush=args.follow)
            if not args.follow:
                return 0
            token, wait = answer["NextToken"], FOLLOW_WAIT_S
    except KeyboardInterrupt:
        return 0


def log_line(event: dict[str, str], form: str) -> str:
    """One event of ``headwater logs`` as printed: a JSON line, or time, request id and message
    (Headwater's own lines, START/END/REPORT and errors, without a request id column)."""
    if form == "json":
        return json.dumps(event, ensure_ascii=False)
    # What a function printed is escaped before it reaches the operator's terminal, as in the
    # daemon's own log: no escape sequence of its own is written out.
    message = defang_text(event["message"])
    if event["logger"] == "platform" and event["level"] != "ERROR":
        return f"{event['time']} {message}"
    return f"{event['time']} {event.get('request_id', '-')}\t{message}"


def print_table(rows: list[tuple[str, ...]], numbers: bool = False) -> None:
    """Columns padded to their widest cell; with ``numbers``, all but the first to the right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.rjust(w) if numbers and i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip())


def cmd_reload(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """SIGHUP to the daemon that runs on the config file (found by its data_dir/daemon.json), as
    systemd's ExecReload sends it; the daemon's log says what changed."""
    import signal

    from router import daemonfile
    from router.config import data_dir_of

    data_dir = data_dir_of(args.config, environ)
    state = daemonfile.read(data_dir) if data_dir is not None else None
    if state is None:
        print(f"headwater: no running daemon recorded for {args.config}", file=sys.stderr)
        return 1
    os.kill(state.pid, signal.SIGHUP)
    print(f"reloading {state.pid} ({state.url})")
    return 0


def cmd_usage(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    from router.config import metering_path_of
    from router.metering import usage

    config = Path(args.config)
    path = Path(args.metering) if args.metering else metering_path_of(config, environ)
    if path is None:
        print(f"headwater: cannot read {config}: give --config or --metering", file=sys.stderr)
        return 2
    try:
        after = time.time() - usage.since_seconds(args.since) if args.since else None
    except ValueError as e:
        print(f"headwater: --since: {e}", file=sys.stderr)
        return 2
    found = usage.snapshot(path)
    if not found:
        print(f"headwater: no metering file at {path}", file=sys.stderr)
        return 1
    skipped = [0]
    rows = usage.summarize(usage.read(found, skipped), args.by, after)
    if args.format == "table":
        print_table([(args.by, *usage.COLUMNS), *usage.cells(rows)], numbers=True)
    else:
        print(usage.render(rows, args.by, args.format))
    if skipped[0]:
        print(f"headwater: {skipped[0]} line(s) that are not whole records left out", file=sys.stderr)
    return 0


COMMANDS = {"invoke": cmd_invoke, "deploy": cmd_deploy, "functions": cmd_functions, "dlq": cmd_dlq,
            "logs": cmd_logs}

if __name__ == "__main__":
    sys.exit(main())
