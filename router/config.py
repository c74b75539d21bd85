"""The daemon's configuration: ``config.toml`` decoded into one frozen tree of msgspec Structs.

Decoding rejects unknown keys and out-of-range values; every error is reported as one line naming
the key path and what was expected (``functions[1].timeout_s: expected an integer from 1 to 900,
got "x"``). Relative paths resolve against the config file's folder. The environment may override
the listen address and the paths (``HEADWATER_LISTEN``, ``HEADWATER_DATA_DIR``,
``HEADWATER_METERING_PATH``); the command line overrides the environment.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import sys
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from router import tls
from router.api.routes import Route, RouteError, RouteTable, parse_route
from router.store import layers as layer_store
from router.store.images import ImageError, Overrides, Registry, parse_reference, resolve_local
from sources.cron import ScheduleError, zone
from sources.cron import parse as parse_schedule
from sources.filters import FilterError, compile_filters
from workers import runtimes
from workers.runtimes import BadRuntime, probe


class ConfigError(Exception):
    """An invalid configuration; the message is the one line shown to the user."""


def _int(lo: int, hi: int) -> Any:
    return Annotated[int, Meta(ge=lo, le=hi, description=f"an integer from {lo} to {hi}")]


def _number(lo: float) -> Any:
    return Annotated[float, Meta(ge=lo, description=f"a number >= {lo}")]


# Lambda's rules for a function's settings, shared by config.toml's types and the Lambda API's
# checks (router.api.management), which must refuse what a config file may not hold either.
NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
HANDLER_PATTERN = r"[^\s]{1,128}"
RUNTIME_PATTERN = runtimes.PATTERN
MEMORY_MB = (128, 10240)
TIMEOUT_S = (1, 900)


def _matching(pattern: str, description: str) -> Any:
    # msgspec searches for a pattern: anchored, it must match the whole string (\Z, since $
    # would also match before a trailing newline).
    return Annotated[str, Meta(pattern=f"^{pattern}\\Z", description=description)]


DEFAULT_RUNTIME = f"python3.{sys.version_info.minor}"  # the router's own Python
FunctionName = _matching(NAME_PATTERN, "a name of 1 to 64 letters, digits, '-' or '_'")
Runtime = _matching(RUNTIME_PATTERN, f"a runtime such as {runtimes.EXAMPLES}")
Handler = _matching(HANDLER_PATTERN, 'a handler such as "app.handler" (module.function)')
LayerArn = _matching(layer_store.VERSION_ARN.pattern,
                     "a layer version ARN: arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION")


class ServerConfig(Struct, frozen=True, forbid_unknown_fields=True):
    listen: str = "127.0.0.1:9000"
    data_dir: str = "var"
    region: Annotated[str, Meta(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$",
                                description='an AWS region name such as "us-east-1"')] = "us-east-1"
    account_id: Annotated[str, Meta(pattern=r"^\d{12}$",
                                    description="a 12-digit account id")] = "000000000000"
    max_workers: _int(1, 10000) = 64  # worker processes of all functions together
    shutdown_grace_s: _number(0) = 30.0
    # After SIGTERM, /readyz answers 503 while everything else is still served for this long, so
    # that a load balancer takes the daemon out of rotation before its listener closes.
    drain_delay_s: _number(0) = 5.0
    body_timeout_s: _number(0.1) = 30.0  # a request body must arrive within this
    # An idle keep-alive connection, or one whose request line and headers have not all arrived,
    # is closed after this: longer than a load balancer's idle timeout (60 s on an ALB), so the
    # balancer, not Headwater, closes an idle connection, as AWS advises for its targets.
    keepalive_timeout_s: _number(0.1) = 75.0
    access_log: bool = False
    # The daemon's stderr: "text" (timestamped lines) or "json" (one object a line), for its own
    # records and the functions' lines alike; records below log_level are not written (a
    # function's own lines always are). See the README's Logs.
    log_format: Annotated[str, Meta(pattern=r"^(text|json)\Z", description='"text" or "json"')] = "text"
    log_level: Annotated[str, Meta(pattern=r"^(debug|info|warning|error)\Z",
                                   description='"debug", "info", "warning" or "error"')] = "info"
    # Each function's recent log lines kept in memory for `headwater logs`, in bytes (0 = none).
    log_ring_bytes: _int(0, 1 << 30) = 1 << 20
    # Credentials for the Lambda API (Invoke and management): "required", "none" (loopback only),
    # or "auto": required once any access key or token is configured (see the README).
    auth: Annotated[str, Meta(pattern=r"^(auto|required|none)$",
                              description='"auto", "required" or "none"')] = "auto"
    access_keys: dict[str, str] = {}  # AWS access key id → secret access key, for SigV4
    tokens: list[str] = []  # bearer tokens: accepted by the API and where a trigger has auth = "token"
    # A second address serving only /metrics, /healthz and /readyz, with no credentials: for a
    # Prometheus scraper on a private interface ("" = none; /metrics on listen needs credentials).
    metrics_listen: str = ""
    # A third address serving only /healthz and /readyz, from a thread of its own: it answers at
    # once however busy the event loop is (see the README's Operations); "" = none.
    health_listen: str = ""
    # Load balancers and proxies (addresses or CIDR networks) whose X-Forwarded-For / Forwarded
    # header names the caller: a function's sourceIp is then the client's, not the balancer's.
    trusted_proxies: list[str] = []
    # HTTPS on listen: a PEM certificate chain (leaf first) and its key, both or neither; "" =
    # plain HTTP, as behind a balancer that ends TLS. A reload reads renewed files again.
    tls_cert: str = ""
    tls_key: str = ""
    # A response a function streams (function URLs in RESPONSE_STREAM mode,
    # InvokeWithResponseStream) is cut with Function.ResponseSizeTooLarge past this: Lambda's 200 MB.
    max_stream_bytes: _int(1024, 2**40) = 200 * 1024 * 1024


class SandboxConfig(Struct, frozen=True, forbid_unknown_fields=True):
    # "bubblewrap": every function in a sandbox of its own (see the README's Sandbox section);
    # "none" (loopback listeners only): functions run as the daemon's user, with its view.
    mode: Annotated[str, Meta(pattern=r"^(bubblewrap|none)$",
                              description='"bubblewrap" or "none"')] = "bubblewrap"
    # Host uids handed to functions one each when the daemon runs as root: uid_min, uid_min + 1, …
    uid_min: _int(1000, 2**31 - 2**20) = 200000
    uid_count: _int(1, 2**20) = 10000
    pids_max: _int(16, 1 << 22) = 1024  # processes and threads per worker (Lambda's 1024)
    nofile: _int(64, 1 << 20) = 1024  # open files per process (Lambda's 1024)
    # Remount the cgroup2 hierarchy with the kernel's favordynmods (root only): a new worker then
    # joins its cgroup in well under a millisecond instead of an RCU grace period.
    favor_dynmods: bool = True


class MeteringConfig(Struct, frozen=True, forbid_unknown_fields=True):
    path: str = "var/metering.jsonl"
    price_per_gb_second: _number(0) = 0.0000166667
    price_per_request: _number(0) = 0.0000002
    rotate_bytes: _int(4096, 2**40) = 100 * 1024 * 1024
    backups: _int(0, 1000) = 5
    rotate_daily: bool = False  # also rotate at the first record of each UTC day
    # Records kept in memory while the file cannot be written (see the README's Metering).
    buffer_bytes: _int(0, 2**34) = 64 * 1024 * 1024


# Who may call a route or a function URL: "auto" needs the API's credentials (a token or a SigV4
# signature) when the daemon has any and nothing otherwise; "aws_iam" is SigV4 with one of
# [server].access_keys, as Lambda's AWS_IAM; "token" a bearer token of [server].tokens.
Auth = Annotated[str, Meta(pattern=r"^(auto|none|token|aws_iam)\Z",
                           description='"auto", "none", "token" or "aws_iam"')]
# What a request must carry once "auto" is resolved; "api" is whatever the Lambda API accepts.
AuthMode = typing.Literal["none", "token", "aws_iam", "api"]


class HttpTrigger(Struct, frozen=True, forbid_unknown_fields=True, tag="http", tag_field="type"):
    route: Annotated[str, Meta(description='a route such as "GET /items/{id}"')]
    auth: Auth = "auto"


# What a queue poller shares between SQS and S3 triggers: Lambda's event source mapping settings.
BATCH_SIZE = (1, 10000)
BATCH_WINDOW_S = (0, 300)
MAXIMUM_CONCURRENCY = (2, 1000)
QUEUE_NAME = r"[A-Za-z0-9_-]{1,80}(\.fifo)?"
QueueArn = Annotated[str, Meta(pattern=rf"^(arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{{12}}:{QUEUE_NAME})?\Z",
                               description='an SQS queue ARN such as "arn:aws:sqs:us-east-1:'
                                           '000000000000:jobs"')]
QueueUrl = Annotated[str, Meta(pattern=r"^(https?://[^/\s]+/\d{12}/[A-Za-z0-9_.-]{1,85})?\Z",
                               description='an SQS queue URL such as '
                                           '"http://127.0.0.1:5000/000000000000/jobs"')]
Url = Annotated[str, Meta(pattern=r"^(https?://\S+)?\Z", description='an http(s) URL or ""')]
Region = Annotated[str, Meta(pattern=r"^([a-z]{2}(-[a-z]+)+-\d)?\Z",
                             description='an AWS region name such as "us-east-1"')]


class QueueTrigger(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """What SQS and S3 triggers share: the queue they poll (one of queue_url, queue_arn) and
    Lambda's event source mapping settings."""

    queue_url: QueueUrl = ""
    queue_arn: QueueArn = ""
    batch_size: _int(*BATCH_SIZE) = 10
    batch_window_s: _int(*BATCH_WINDOW_S) = 0  # MaximumBatchingWindowInSeconds
    enabled: bool = True
    maximum_concurrency: _int(*MAXIMUM_CONCURRENCY) | None = None  # default: the function's max_workers
    endpoint_url: Url = ""  # "" = [aws].endpoint_url
    region: Region = ""  # "" = [aws].region


class SqsTrigger(QueueTrigger, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="sqs"):
    """An SQS event source mapping declared in the config file."""

    report_batch_item_failures: bool = False  # FunctionResponseTypes = ["ReportBatchItemFailures"]
    # Lambda's FilterCriteria: each a filter pattern, as a table or as its JSON text.
    filters: list[dict[str, Any] | str] = []


class S3Trigger(QueueTrigger, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="s3"):
    """Object notifications of a bucket, through the SQS queue the bucket notifies ("" = webhook
    only), and pushed to ``POST /events/s3/{name}`` (a self-hosted store's webhook)."""

    bucket: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z",
                                description="an S3 bucket name")]
    events: list[Annotated[str, Meta(pattern=r"^s3:[A-Za-z]+(:[A-Za-z*]+)?\Z",
                                     description='an S3 event type such as "s3:ObjectCreated:*"')]] \
        = msgspec.field(default_factory=lambda: ["s3:ObjectCreated:*"])
    prefix: str = ""
    suffix: str = ""
    # Write the bucket's notification configuration (this trigger's queue, events and filters).
    manage_notifications: bool = False
    name: Annotated[str, Meta(pattern=rf"^({NAME_PATTERN})?\Z",
                              description="a name of letters, digits, '-' or '_'")] = ""


class ScheduleTrigger(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="schedule",
                      tag_field="type"):
    """An EventBridge schedule: each tick invokes the function asynchronously with a Scheduled
    Event (or with ``input``), once per tick however many daemons share the config."""

    expression: Annotated[str, Meta(description='a schedule such as "rate(5 minutes)" or '
                                                '"cron(0 12 * * ? *)"')]
    timezone: str = "UTC"
    catch_up: Annotated[str, Meta(pattern=r"^(none|latest)\Z", description='"none" or "latest"')] = "none"
    enabled: bool = True
    # The schedule's name: its ARN's, and the identity of its ticks in the store ("" = FUNCTION-N,
    # N its place among the function's triggers).
    name: Annotated[str, Meta(pattern=rf"^({NAME_PATTERN})?\Z",
                              description="a name of letters, digits, '-' or '_'")] = ""
    input: str = ""  # JSON handed to the function instead of the Scheduled Event (a target's Input)


Trigger = HttpTrigger | SqsTrigger | S3Trigger | ScheduleTrigger


class Credentials(Struct, frozen=True, forbid_unknown_fields=True):
    """AWS credentials handed to a function, as Lambda hands it its execution role's."""

    access_key_id: str
    secret_access_key: str
    session_token: str = ""


class AwsConfig(Struct, frozen=True, forbid_unknown_fields=True):
    """Where the AWS services triggers poll (and functions reach) are, and with which credentials.

    The daemon's own credentials come from the standard AWS chain (environment, shared files)
    unless given here; ``functions`` are the credentials every function gets unless it has its own.
    """

    endpoint_url: Url = ""  # "" = AWS itself
    region: Region = ""  # "" = [server].region
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""
    functions: Credentials | None = None


class Cors(Struct, frozen=True, forbid_unknown_fields=True):
    """A function URL's CORS settings (Lambda's Cors, in snake case), stored and reported."""

    allow_credentials: bool = False
    allow_headers: list[str] = []
    allow_methods: list[str] = []
    allow_origins: list[str] = []
    expose_headers: list[str] = []
    max_age: _int(0, 86400) = 0


InvokeMode = typing.Literal["BUFFERED", "RESPONSE_STREAM"]


class FunctionUrl(Struct, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    auth: Auth = "auto"
    cors: Cors | None = None
    # Lambda's InvokeMode: the response whole (BUFFERED), or streamed as the function writes it.
    invoke_mode: InvokeMode = "BUFFERED"


Network = Annotated[str, Meta(pattern=r"^(default|none|host)$",
                              description='"default", "none" or "host"')]
Endpoint = Annotated[str, Meta(pattern=r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\]):\d{1,5}$",
                               description='a loopback "HOST:PORT" such as "127.0.0.1:9001"')]
EPHEMERAL_MB = (512, 10240)


# Where an asynchronous event ends: "" nowhere, "dlq" the daemon's dead-letter store, a function (its
# name or Lambda ARN) invoked asynchronously with the destination record, or an SQS queue's ARN.
Destination = Annotated[str, Meta(
    pattern=rf"^(|dlq|{NAME_PATTERN}|arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{{12}}:function:{NAME_PATTERN}"
            rf"|arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{{12}}:{QUEUE_NAME})\Z",
    description='"dlq", a function name or ARN, or an SQS queue ARN')]


class AsyncInvoke(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A function's asynchronous invocation settings (Lambda's EventInvokeConfig)."""

    max_retry_attempts: _int(0, 2) = 2
    max_event_age_s: _int(60, 21600) = 21600
    on_success: Destination = ""
    # Lambda drops an event it gave up on unless a destination is set; Headwater keeps it.
    on_failure: Destination = "dlq"


class FunctionConfig(Struct, frozen=True, forbid_unknown_fields=True):
    name: FunctionName
    # A zip-style function has a handler and its code folder; an image function has neither: it
    # has ``image`` (and after its fetch, ``code`` is the unpacked image's cache folder).
    handler: Handler = ""
    code: str = ""
    runtime: Runtime = DEFAULT_RUNTIME
    memory_mb: _int(*MEMORY_MB) = 128
    timeout_s: _int(*TIMEOUT_S) = 3
    min_workers: _int(0, 1000) = 0
    max_workers: _int(0, 1000) = 4
    max_queue: _int(0, 100000) = 1000
    keep_warm_s: _number(0) = 300.0
    # Fork workers warm from a process that imported the module once (false: a fresh interpreter
    # per worker, for modules that open sockets or start threads at import).
    fork_server: bool = True
    # A function that has run nothing for this long gives up its fork server (its RSS); the next
    # cold start then pays the import again.
    fork_server_idle_s: _number(1) = 900.0
    ephemeral_storage_mb: _int(*EPHEMERAL_MB) = 512  # the sandbox's /tmp (Lambda's EphemeralStorage)
    # The sandbox's network: outside addresses but not the host's loopback ("default"), its own
    # loopback only ("none"), or the daemon's own network ("host", logged at every start).
    network: Network = "default"
    allow: list[Endpoint] = []  # host loopback endpoints the function may reach anyway
    env: dict[str, str] = {}
    # Layer versions published through the API, unpacked in this order under /opt.
    layers: Annotated[list[LayerArn], Meta(max_length=layer_store.MAX_LAYERS)] = []
    triggers: list[Trigger] = []
    credentials: Credentials | None = None  # its execution role's; None = [aws].functions
    url: FunctionUrl = FunctionUrl()  # the function URL: /urls/NAME/…
    async_: AsyncInvoke = msgspec.field(default_factory=AsyncInvoke, name="async")
    # Whether the Lambda API may update or delete this config-defined function (its changes are
    # kept under data_dir and win over this file's code and settings at the next start).
    api_writable: bool = False
    # PackageType Image: a registry reference ("127.0.0.1:5000/repo:tag"), "oci:PATH[:TAG]" or
    # "docker-archive:PATH"; ImageConfig's overrides of its ENTRYPOINT, CMD and WORKDIR.
    image: str = ""
    image_config: Overrides | None = None


class ImagesConfig(Struct, frozen=True, forbid_unknown_fields=True):
    """How container images are fetched: per registry (its host[:port]), credentials and TLS."""

    registries: dict[str, Registry] = {}
    pull_timeout_s: _number(1) = 300.0


class AsyncConfig(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The durable store of asynchronous events and how this node runs them."""

    store: Annotated[str, Meta(pattern=r"^(sqlite|postgres(ql)?://\S+)\Z",
                               description='"sqlite" or a postgresql:// URL')] = "sqlite"
    # SQLite's: FULL flushes every commit to the disk (an accepted event survives a power loss);
    # NORMAL survives the daemon being killed, not the machine losing power.
    synchronous: Annotated[str, Meta(pattern=r"^(FULL|NORMAL)\Z",
                                     description='"FULL" or "NORMAL"')] = "FULL"
    # How long a claimed event stays this node's without being renewed; renewed while it runs, so
    # this is how soon another node takes over the events of a node that died.
    lease_s: _number(1) = 30.0
    # How often the store is asked for due events nobody announced (retries, other nodes' events).
    poll_s: _number(0.01) = 0.25
    max_in_flight: _int(1, 100000) = 256  # events claimed and not settled, on this node
    retry_delays_s: tuple[_number(0), _number(0)] = (60.0, 120.0)  # Lambda's 1 and 2 minutes
    backoff_base_s: _number(0.001) = 1.0  # after a throttle or system error, doubling …
    backoff_max_s: _number(0.001) = 300.0  # … up to this


class Config(Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerConfig = ServerConfig()
    sandbox: SandboxConfig = SandboxConfig()
    metering: MeteringConfig = MeteringConfig()
    aws: AwsConfig = AwsConfig()
    async_: AsyncConfig = msgspec.field(default_factory=AsyncConfig, name="async")
    images: ImagesConfig = ImagesConfig()
    functions: list[FunctionConfig] = []


# --- loading ---------------------------------------------------------------------------------


def load(path: str | Path, environ: Mapping[str, str] | None = None,
         listen: str | None = None, log_format: str | None = None,
         log_level: str | None = None) -> Config:
    """Read, validate and resolve a config file, with the command line's values (``None``: not
    given) over the file's. Raises ``ConfigError``."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(raw, path.resolve().parent, environ or {}, listen, log_format, log_level)


def parse(raw: dict[str, Any], base: Path, environ: Mapping[str, str],
          listen: str | None = None, log_format: str | None = None,
          log_level: str | None = None) -> Config:
    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(explain(str(e), raw)) from None
    server = msgspec.structs.replace(
        config.server,
        listen=listen or environ.get("HEADWATER_LISTEN") or config.server.listen,
        log_format=log_format or config.server.log_format,
        log_level=log_level or config.server.log_level,
        data_dir=str(_data_dir(base, environ, config.server.data_dir)),
        tls_cert=config.server.tls_cert and str(base / config.server.tls_cert),
        tls_key=config.server.tls_key and str(base / config.server.tls_key))
    metering = msgspec.structs.replace(
        config.metering,
        path=str(_metering_path(base, environ, config.metering.path)))
    functions = [msgspec.structs.replace(f, code=str(base / f.code) if f.code else "",
                                         image=resolve_local(f.image, base))
                 for f in config.functions]
    config = msgspec.structs.replace(config, server=server, metering=metering, functions=functions)
    check(config, environ.get("PATH", os.defpath))
    return config


def _data_dir(base: Path, environ: Mapping[str, str], configured: str) -> Path:
    return base / environ.get("HEADWATER_DATA_DIR", configured)


def _metering_path(base: Path, environ: Mapping[str, str], configured: str) -> Path:
    return base / environ.get("HEADWATER_METERING_PATH", configured)


def _setting_of(path: Path, table: str, key: str, default: str) -> str | None:
    """One string setting of the config file at ``path``, read without checking the rest of the
    file (for the client commands); None if the file cannot be read or the value is no string."""
    try:
        section = tomllib.loads(path.read_text()).get(table, {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    value = section.get(key, default) if isinstance(section, dict) else None
    return value if isinstance(value, str) else None


def data_dir_of(path: str | Path, environ: Mapping[str, str]) -> Path | None:
    """The data folder the config file at ``path`` gives its daemon (where the client commands
    find the daemon's address)."""
    path = Path(path)
    configured = _setting_of(path, "server", "data_dir", ServerConfig().data_dir)
    return None if configured is None else _data_dir(path.resolve().parent, environ, configured)


def metering_path_of(path: str | Path, environ: Mapping[str, str]) -> Path | None:
    """The metering file the config file at ``path`` gives its daemon (for ``headwater usage``)."""
    path = Path(path)
    configured = _setting_of(path, "metering", "path", MeteringConfig().path)
    return None if configured is None else _metering_path(path.resolve().parent, environ, configured)


def trusted_networks(server: ServerConfig) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies)


def split_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9000"`` / ``"[::1]:9000"`` → host and port; ``ValueError`` otherwise."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]]+):(\d{1,5})", listen)
    if not m:
        raise ValueError(listen)
    host, port = (m[1], m[2]) if m[1] else (m[3], m[4])
    if not 0 <= int(port) <= 65535:
        raise ValueError(listen)
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def function_arn(server: ServerConfig, name: str) -> str:
    return f"arn:aws:lambda:{server.region}:{server.account_id}:function:{name}"


def function_aws_env(fn: FunctionConfig, aws: AwsConfig) -> dict[str, str]:
    """What a function gets of AWS, as from its execution role on Lambda: the credentials (its
    own, or [aws].functions') and the endpoint, which boto3 honours in AWS_ENDPOINT_URL."""
    env = {"AWS_ENDPOINT_URL": aws.endpoint_url} if aws.endpoint_url else {}
    credentials = fn.credentials or aws.functions
    if credentials is not None:
        env |= {"AWS_ACCESS_KEY_ID": credentials.access_key_id,
                "AWS_SECRET_ACCESS_KEY": credentials.secret_access_key}
        if credentials.session_token:
            env["AWS_SESSION_TOKEN"] = credentials.session_token
    return env


def loopback_port(url: str) -> int | None:
    """The port of an http(s) URL on the host's loopback, which a sandboxed function can reach
    only when granted; None for any other URL."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return port if parts.hostname and is_loopback(parts.hostname) else None


def has_credentials(server: ServerConfig) -> bool:
    return bool(server.access_keys or server.tokens)


def api_auth_required(server: ServerConfig) -> bool:
    return server.auth == "required" or (server.auth == "auto" and has_credentials(server))


def effective_auth(mode: str, server: ServerConfig) -> AuthMode:
    """What a route or function URL with ``auth = mode`` asks of its callers."""
    if mode == "auto":
        return "api" if api_auth_required(server) else "none"
    return typing.cast(AuthMode, mode)


# Lambda's reserved environment variables: CreateFunction refuses to set them, and so does
# config.toml (the worker would override them anyway).
RESERVED_ENV = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"})


def reserved_names(env: Mapping[str, str]) -> list[str]:
    return sorted(name for name in env if name in RESERVED_ENV)


def auth_problem(mode: str, server: ServerConfig) -> str | None:
    """Why ``auth = mode`` cannot be satisfied on this daemon, if it cannot."""
    if mode == "token" and not server.tokens:
        return 'auth = "token" needs [server].tokens'
    if mode == "aws_iam" and not server.access_keys:
        return 'auth = "aws_iam" needs [server].access_keys'
    return None


def url_bypass(fn: FunctionConfig, server: ServerConfig) -> str | None:
    """The first of ``fn``'s routes its function URL would let a caller reach without the route's
    credentials, if any: an open URL beside a protected route is the same function, unprotected."""
    if not fn.url.enabled or effective_auth(fn.url.auth, server) != "none":
        return None
    for trigger in http_triggers(fn):
        if effective_auth(trigger.auth, server) != "none":
            return trigger.route
    return None


def trigger_name(fn: FunctionConfig, index: int) -> str:
    """The name of an S3 trigger (its webhook's; the function's by default) or of a schedule (its
    ticks'; FUNCTION-INDEX by default)."""
    trigger = fn.triggers[index]
    if isinstance(trigger, S3Trigger):
        return trigger.name or fn.name
    if isinstance(trigger, ScheduleTrigger):
        return trigger.name or f"{fn.name}-{index}"
    raise TypeError(f"a {type(trigger).__name__} has no name")


def schedule_problem(trigger: ScheduleTrigger) -> str | None:
    """Why a schedule trigger cannot run ("key: why"), if it cannot."""
    try:
        zone(trigger.timezone)
    except ScheduleError as e:
        return f"timezone: {e}"
    try:
        parse_schedule(trigger.expression, trigger.timezone)
    except ScheduleError as e:
        return f"expression: {e}"
    if trigger.input:
        try:
            json.loads(trigger.input)
        except ValueError as e:
            return f"input: not JSON: {e}"
    return None


def http_triggers(fn: FunctionConfig) -> list[HttpTrigger]:
    return [t for t in fn.triggers if isinstance(t, HttpTrigger)]


def queue_trigger_problem(trigger: QueueTrigger) -> str | None:
    """What Lambda would refuse in a queue trigger's settings ("key: why"), if anything."""
    if trigger.queue_url and trigger.queue_arn:
        return "queue_url: give queue_url or queue_arn, not both"
    queue = trigger.queue_url or trigger.queue_arn
    if isinstance(trigger, SqsTrigger) and not queue:
        return "queue_url: an SQS trigger needs queue_url or queue_arn"
    if isinstance(trigger, S3Trigger) and trigger.manage_notifications and not queue:
        return "manage_notifications: needs the queue the bucket is to notify (queue_url or queue_arn)"
    if problem := batching_problem(trigger.batch_size, trigger.batch_window_s, queue.endswith(".fifo")):
        return problem
    if isinstance(trigger, SqsTrigger) and trigger.filters:
        try:
            compile_filters(filter_patterns(trigger.filters))
        except FilterError as e:
            return f"filters: {e}"
    return None


def batching_problem(batch_size: int, window_s: int, fifo: bool) -> str | None:
    """Lambda's rules on an SQS mapping's batching, with its words."""
    if fifo and batch_size > 10:
        return f"batch_size: a FIFO queue's batch size is at most 10, got {batch_size}"
    if fifo and window_s:
        return "batch_window_s: batching windows are not supported for FIFO queues"
    if batch_size > 10 and window_s == 0:
        return ("batch_window_s: Maximum batch window in seconds must be greater than 0 if maximum "
                "batch size is greater than 10")
    return None


def filter_patterns(filters: list[dict[str, Any] | str]) -> list[str]:
    """Filter patterns as the Lambda API carries them: JSON text."""
    return [f if isinstance(f, str) else json.dumps(f) for f in filters]


def check(config: Config, path: str | None) -> None:
    """The rules a type cannot say: unique names, files that exist, runtimes that run,
    consistent limits. ``path`` is the PATH runtimes are looked up on."""
    server = config.server
    try:
        host = split_listen(server.listen)[0]
    except ValueError:
        raise ConfigError(f"server.listen: expected HOST:PORT, got {json.dumps(server.listen)}") from None
    credentials = has_credentials(server)
    if not is_loopback(host):
        if server.auth == "none":
            raise ConfigError(f'server.auth: "none" is allowed only when listening on loopback, '
                              f"not on {host}")
        if not credentials:
            raise ConfigError(f"server.access_keys: listening on {host} needs credentials: "
                              "configure access_keys or tokens")
    elif server.auth == "required" and not credentials:
        raise ConfigError('server.auth: "required" needs access_keys or tokens to be configured')
    if config.sandbox.mode == "none" and not is_loopback(host):
        raise ConfigError(f'sandbox.mode: "none" is allowed only when listening on loopback, '
                          f"not on {host}")
    if bool(server.tls_cert) != bool(server.tls_key):
        raise ConfigError("server.tls_cert: TLS needs both tls_cert and tls_key")
    if server.tls_cert and (problem := tls.load_problem(server.tls_cert, server.tls_key)):
        raise ConfigError(f"server.tls_cert: {problem}")
    for i, proxy in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"server.trusted_proxies[{i}]: expected an address or a network "
                              f"such as \"10.0.0.0/8\", got {json.dumps(proxy)}") from None
    for key in ("metrics_listen", "health_listen"):
        if value := getattr(server, key):
            try:
                split_listen(value)
            except ValueError:
                raise ConfigError(f"server.{key}: expected HOST:PORT, got "
                                  f"{json.dumps(value)}") from None
    seen: set[str] = set()
    routes: list[Route] = []
    # A root daemon runs each sandboxed function as a uid of its own, to whom only "other" applies.
    sandboxed_uid = config.sandbox.mode == "bubblewrap" and os.geteuid() == 0
    for i, f in enumerate(config.functions):
        at = f"functions[{i}]"
        for j, trigger in enumerate(f.triggers):
            if isinstance(trigger, ScheduleTrigger):
                if problem := schedule_problem(trigger):
                    raise ConfigError(f"{at}.triggers[{j}].{problem}")
                continue
            if not isinstance(trigger, HttpTrigger):
                if problem := queue_trigger_problem(trigger):
                    raise ConfigError(f"{at}.triggers[{j}].{problem}")
                continue
            try:
                routes.append(parse_route(trigger.route, f.name))
            except RouteError as e:
                raise ConfigError(f"{at}.triggers[{j}].route: {e}") from None
            if problem := auth_problem(trigger.auth, server):
                raise ConfigError(f"{at}.triggers[{j}].auth: {problem}")
        if problem := auth_problem(f.url.auth, server):
            raise ConfigError(f"{at}.url.auth: {problem}")
        if (route := url_bypass(f, server)) is not None:
            raise ConfigError(f"{at}.url.auth: the function URL would be open while route "
                              f"{route!r} needs credentials; give the URL an auth too, or "
                              "url = { enabled = false }")
        if reserved := reserved_names(f.env):
            raise ConfigError(f"{at}.env: {', '.join(reserved)}: reserved by Lambda, cannot be set")
        if f.name in seen:
            raise ConfigError(f"{at}.name: duplicate function name {json.dumps(f.name)}")
        seen.add(f.name)
        if f.image or f.image_config is not None:
            if problem := image_problem(f, config.sandbox):
                raise ConfigError(f"{at}.{problem}")
        else:
            check_package(f, at, path, server, sandboxed_uid)
        if f.async_.on_success == "dlq":
            raise ConfigError(f'{at}.async.on_success: "dlq" keeps failures; a success goes to a '
                              "function or a queue")
        if f.min_workers > f.max_workers:
            raise ConfigError(f"{at}.min_workers: expected at most max_workers ({f.max_workers}), "
                              f"got {f.min_workers}")
    # An S3 trigger's webhook, POST /events/s3/NAME, and a schedule's ticks each name one trigger.
    names: dict[type, set[str]] = {S3Trigger: set(), ScheduleTrigger: set()}
    for i, f in enumerate(config.functions):
        for j, trigger in enumerate(f.triggers):
            if isinstance(trigger, S3Trigger | ScheduleTrigger):
                name = trigger_name(f, j)
                if name in names[type(trigger)]:
                    raise ConfigError(f"functions[{i}].triggers[{j}].name: another "
                                      f"{trigger.__struct_config__.tag} trigger is named "
                                      f"{json.dumps(name)} already (give each a name)")
                names[type(trigger)].add(name)
    floors = sum(f.min_workers for f in config.functions)
    if floors > server.max_workers:
        # Warm floors that fill the daemon's cap would leave other functions no worker at all.
        raise ConfigError(f"server.max_workers: the functions' min_workers add up to {floors}, "
                          f"more than max_workers ({server.max_workers})")
    for first, second in RouteTable(routes).conflicts():
        raise ConfigError(f"functions: route {second.key!r} of {second.target!r} conflicts with "
                          f"{first.key!r} of {first.target!r}")


def check_package(f: FunctionConfig, at: str, path: str | None, server: ServerConfig,
                  sandboxed_uid: bool) -> None:
    """A zip function's code, runtime and layers."""
    for key in ("handler", "code"):
        if not getattr(f, key):
            raise ConfigError(f"{at}.{key}: required key is missing")
    try:
        probe(f.runtime, path)
    except BadRuntime as e:
        raise ConfigError(f"{at}.runtime: {e}") from None
    if not Path(f.code).is_dir():
        raise ConfigError(f"{at}.code: {json.dumps(f.code)} is not a directory")
    if problem := layers_problem(f.layers, server):
        raise ConfigError(f"{at}.layers: {problem}")
    if sandboxed_uid and (closed := closed_to_others(Path(f.code), f.handler)):
        raise ConfigError(f"{at}.code: {closed} cannot be read by the function, which runs as a "
                          "uid of its own: make it world-readable (chmod -R o+rX)")


def layers_problem(arns: list[str], server: ServerConfig) -> str | None:
    """Why a config file's function cannot have these layers: Lambda's rules, then a version
    that is not under data_dir (publish it first; a deleted one a function used stays there)."""
    if problem := layer_store.layers_problem(arns, server.region, server.account_id):
        return problem
    for arn in arns:
        folder = layer_store.arn_folder(server.data_dir, arn)
        if folder is None or not folder.is_dir():
            return (f"layer version {arn} does not exist in {server.data_dir} (publish it with "
                    "aws lambda publish-layer-version)")
    return None


def image_problem(fn: FunctionConfig, sandbox: SandboxConfig) -> str | None:
    """What is wrong with an image function's settings ("key: why"), if anything."""
    if not fn.image:
        return "image: required with image_config"
    if fn.handler or fn.code:
        return f"{'handler' if fn.handler else 'code'}: an image function has none (its CMD is the handler)"
    if fn.layers:
        return "layers: an image function has none, as on Lambda (the image holds what they would)"
    if sandbox.mode != "bubblewrap":
        return 'image: an image runs in the sandbox: it needs [sandbox] mode = "bubblewrap"'
    try:
        parse_reference(fn.image, local=True)
    except ImageError as e:
        return str(e)  # the config's references' messages name "image:" themselves
    overrides = fn.image_config
    if overrides is not None and overrides.working_directory and \
            not overrides.working_directory.startswith("/"):
        return "image_config.working_directory: must be an absolute path"
    return None


def closed_to_others(code: Path, handler: str) -> str | None:
    """The code folder, or its handler's module, if a uid other than its owner cannot read it."""
    module = handler.rpartition(".")[0].replace(".", "/")
    for path, need in ((code, stat.S_IROTH | stat.S_IXOTH), (code / f"{module}.py", stat.S_IROTH),
                       (code / module, stat.S_IROTH | stat.S_IXOTH)):
        try:
            mode = path.stat().st_mode
        except OSError:
            continue  # a module found elsewhere (a layer, PYTHONPATH), or missing: import says so
        if mode & need != need:
            return f"{json.dumps(str(path))} (mode {stat.S_IMODE(mode):04o})"
    return None


# --- error messages --------------------------------------------------------------------------

_SIMPLE = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>.*)`)?$", re.S)
_FIELD = re.compile(r"`(?P<field>[^`]+)`")
_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def explain(message: str, raw: Any) -> str:
    """Turn msgspec's ``Expected `int`, got `str` - at `$.a[1].b``` into ``a[1].b: expected …``."""
    m = _AT.match(message)
    assert m is not None
    what, path = m["what"], m["path"] or ""
    tokens = [name or int(index) for name, index in _TOKEN.findall(path)]
    if what.startswith(("Object contains unknown field", "Object missing required field")):
        field = _FIELD.search(what)
        name = _dotted([*tokens, field["field"] if field else "?"])
        problem = "unknown key" if "unknown" in what else "required key is missing"
        return f"{name}: {problem}"
    expected = describe(_type_at(Config, tokens))
    got = _value_at(raw, tokens)
    return f"{_dotted(tokens)}: expected {expected}, got {json.dumps(got, default=str)}"


def _dotted(tokens: list[str | int]) -> str:
    out = ""
    for t in tokens:
        out += f"[{t}]" if isinstance(t, int) else (f".{t}" if out else t)
    return out or "(top level)"


def _type_at(tp: Any, tokens: list[str | int]) -> Any:
    for t in tokens:
        base = typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp
        if isinstance(base, type) and issubclass(base, Struct):
            tp = typing.get_type_hints(base, include_extras=True).get(str(t), Any)
        elif typing.get_origin(base) in (list, dict):
            tp = typing.get_args(base)[-1]
        else:
            return Any
    return tp


def describe(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        base, *extras = typing.get_args(tp)
        for meta in extras:
            if isinstance(meta, Meta) and meta.description:
                return meta.description
        tp = base
    if typing.get_origin(tp) is dict:
        inner = describe(typing.get_args(tp)[1])
        return f"a table of {inner.split(' ', 1)[1] if inner.startswith(('a ', 'an ')) else inner}s"
    if typing.get_origin(tp) is list:
        return "an array"
    if isinstance(tp, type) and issubclass(tp, Struct):
        return "a table"
    return _SIMPLE.get(tp, "a valid value")


def _value_at(raw: Any, tokens: list[str | int]) -> Any:
    for t in tokens:
        try:
            raw = raw[t]
        except (KeyError, IndexError, TypeError):
            return None
    return raw
