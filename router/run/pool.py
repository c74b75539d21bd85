"""A function's queue and its workers: the router's side of running invocations.

``submit`` hands an invocation to an idle worker at once (the warm path: no task, no timer, one
pipe write) or queues it and lets the scaling policy start workers. Every way an invocation can
end — result, function error, init error, timeout, crash, throttle, shutdown — passes through
``_finish``, which writes the one metering record and the END/REPORT lines and resolves the future.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import msgspec

from router.config import Config, FunctionConfig, function_arn, function_aws_env
from router.intake.invocation import Invocation, Outcome, Status
from router.intake.stream import ResponseStream
from router.metering.record import Meter, billed_ms
from router.metrics.instruments import FunctionMetrics
from router.run.capacity import Capacity
from router.run.funclog import FunctionLogs
from router.run.isolation import Isolation
from router.run.scaling import Snapshot, plan
from router.store.images import IMAGE_PATH, Launch, launch, read_settings
from router.store.opt import opt_folder
from workers.bootstrap import INIT_FAILED
from workers.forkserver import (
    ForkFailed,
    ForkServer,
    ForkServerGone,
    InitFailed,
    Retired,
    SandboxFailed,
)
from workers.process import Worker, WorkerSpec
from workers.protocol import MAX_RESPONSE, Invoke, Result
from workers.runtime_api import ApiWorker
from workers.runtimes import BadRuntime, Launcher, probe
from workers.runtimes.image import launcher as image_launcher
from workers.runtimes.image import setpriv_argv
from workers.sandbox import OPT, RUNTIME_DIR, TASK_ROOT

log = logging.getLogger("headwater.pool")

INIT_TIMEOUT_S = 10.0  # Lambda's limit on the init phase
INIT_RETRY_S = (1.0, 60.0)  # back-off between init attempts after a failure: first, most
UNAVAILABLE = "CodeArtifactUserFailedException"  # Lambda's, for a function whose image failed


class InitFailure(msgspec.Struct):
    status: Status
    error_type: str
    error: dict[str, object]  # Lambda's error object, without its requestId
    init_duration_ms: float
    retry_at: float  # monotonic; until then, callers get this failure without a new attempt
    backoff: float


def worker_env(fn: FunctionConfig, config: Config, environ: dict[str, str],
               launcher: Launcher | None, runtime_dir: str,
               image: Launch | None = None) -> dict[str, str]:
    """The worker's whole environment: Lambda's variables and the function's own, nothing else.

    The daemon's environment (which may hold secrets) is not inherited. Unsandboxed (no
    ``launcher``), its PATH is passed on, so that the function's subprocesses find what the
    machine has; in the sandbox, PATH is the runtime's and the system's folders, as on Lambda,
    and the code is at /var/task. ``runtime_dir`` is where the runtime's own files are. An
    ``image``'s ENV comes first (its PATH too), under the function's own and Lambda's; its
    handler is its CMD, and AWS_EXECUTION_ENV is the image's to set, as on Lambda.
    """
    sandboxed = launcher is not None
    reserved = {
        "_HANDLER": fn.handler,
        "AWS_REGION": config.server.region,
        "AWS_DEFAULT_REGION": config.server.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
        "LAMBDA_TASK_ROOT": TASK_ROOT if sandboxed else fn.code,
        "LAMBDA_RUNTIME_DIR": runtime_dir,
        "LANG": "C.UTF-8",
        "TZ": "UTC",
    }
    if image is not None:
        reserved["_HANDLER"] = image.handler
        del reserved["AWS_EXECUTION_ENV"]
        return {"PATH": IMAGE_PATH} | image.env | fn.env | function_aws_env(fn, config.aws) | reserved
    if launcher is not None:
        path = ":".join([*launcher.path, "/usr/local/bin", "/usr/bin", "/bin"])
    else:
        path = environ.get("PATH", os.defpath)
    return {"PATH": path} | fn.env | function_aws_env(fn, config.aws) | reserved


def layer_env(env: dict[str, str], launcher: Launcher, opt: str) -> dict[str, str]:
    """The variables that lead a worker into its layers at ``opt``: /opt/bin on PATH, /opt/lib on
    LD_LIBRARY_PATH and the runtime's ``layer_paths``, each after what ``env`` has in it (a
    PYTHONPATH the function sets comes first, as it does on Lambda's sys.path)."""
    wanted = {"PATH": ("bin",), "LD_LIBRARY_PATH": ("lib",), **launcher.layer_paths}
    return {name: ":".join([*(p for p in env.get(name, "").split(":") if p),
                            *(f"{opt}/{folder}" for folder in folders)])
            for name, folders in wanted.items()}


def worker_spec(fn: FunctionConfig, config: Config, environ: dict[str, str],
                isolation: Isolation, opt: str = "") -> WorkerSpec:
    """How the function's fork server and workers are started: runtime, environment, sandbox
    and limits; ``opt`` the host folder of its layers (``opt_folder``)."""
    if fn.image:
        return image_spec(fn, config, environ, isolation)
    try:
        launcher = probe(fn.runtime, environ.get("PATH", os.defpath))
    except BadRuntime:  # gone since the config was checked: each start reports it
        launcher = Launcher(fn.runtime, fn.runtime, ())
    sandbox = isolation.sandbox(fn, launcher, opt)
    # The code and the runtime's files as the worker sees them: where the sandbox has them, or
    # where they are (unsandboxed, a Python function's packages are the daemon's site-packages).
    task, runtime = ((TASK_ROOT, RUNTIME_DIR) if sandbox is not None else
                     (fn.code, os.path.dirname(launcher.files[0]) if launcher.files else ""))
    env = worker_env(fn, config, environ, launcher if sandbox is not None else None, runtime)
    opt_inside = OPT if sandbox is not None else opt
    if opt:
        env |= layer_env(env, launcher, opt_inside)
    command = tuple(arg.replace("{task}", task).replace("{runtime}", runtime).replace("{opt}", opt_inside)
                    for arg in worker_command(launcher, fn.code, opt))
    return WorkerSpec(python=launcher.executable, env=env, cwd=fn.code,
                      fork=fn.fork_server and not launcher.worker, command=command,
                      sandbox=sandbox, **spec_limits(fn, config, environ))


def spec_limits(fn: FunctionConfig, config: Config, environ: dict[str, str]) -> dict[str, Any]:
    """What every worker spec has of the config and the daemon: the limits and the daemon's PATH."""
    return {"memory_mb": fn.memory_mb, "pids_max": config.sandbox.pids_max,
            "nofile": config.sandbox.nofile, "host_path": environ.get("PATH", os.defpath)}


def worker_command(launcher: Launcher, code: str, opt: str) -> tuple[str, ...]:
    """What each worker execs: the launcher's command, or, for one that execs a file of the
    package ("{task}/bootstrap": a custom runtime's), the layers' ``/opt/bootstrap`` when the
    package has none and a layer has one, as Lambda looks for it."""
    first = launcher.worker[0] if launcher.worker else ""
    entry = first.removeprefix("{task}/") if first.startswith("{task}/") else ""
    if (entry and opt and not os.path.lexists(os.path.join(code, entry))
            and os.path.lexists(os.path.join(opt, entry))):
        return (f"{{opt}}/{entry}", *launcher.worker[1:])
    return launcher.worker


def image_spec(fn: FunctionConfig, config: Config, environ: dict[str, str],
               isolation: Isolation) -> WorkerSpec:
    """An image function's: its ENTRYPOINT + CMD exec'd by a fork server in a sandbox whose root
    is the image's rootfs (``fn.code`` is its cache folder; "" while it has none, and then the
    pool is unavailable and starts nothing)."""
    limits = spec_limits(fn, config, environ)
    if not fn.code or not (Path(fn.code) / "image.json").is_file():
        return WorkerSpec(python="", env={}, cwd="/", fork=False, command=("",), **limits)
    run = launch(read_settings(Path(fn.code)), fn.image_config)
    launcher = image_launcher(run.argv)
    sandbox = isolation.sandbox(fn, launcher, root=f"{fn.code}/rootfs", cwd=run.cwd,
                                setpriv=setpriv_argv())
    env = worker_env(fn, config, environ, launcher, RUNTIME_DIR, image=run)
    return WorkerSpec(python=launcher.executable, loader=launcher.loader, env=env, cwd="/",
                      fork=False, command=run.argv, sandbox=sandbox, **limits)


class BadEntrypoint(Exception):
    """The runtime's entry point (a custom runtime's ``bootstrap``) cannot be run."""


def entrypoint_problem(spec: WorkerSpec, code: str, opt: str) -> str | None:
    """Why the file a Runtime API worker execs cannot run, if it cannot (Lambda's message)."""
    if spec.sandbox is not None and spec.sandbox.root:
        return None  # an image's: checked when it was fetched
    sandboxed = spec.sandbox is not None
    inside = spec.command[0] if spec.command else ""
    for root, folder in ((TASK_ROOT if sandboxed else code, code), (OPT if sandboxed else opt, opt)):
        if folder and inside.startswith(f"{root}/"):
            break
    else:  # neither the package's nor a layer's: the runtime's own, checked by probe
        return None
    host = Path(folder, inside[len(root) + 1:])
    if not host.is_file():
        return f"Couldn't find valid bootstrap(s): [{inside}]"
    if not host.stat().st_mode & 0o001:  # the function's uid is "other" to its files
        return f"fork/exec {inside}: permission denied (make it executable by all: chmod 755)"
    return None


def error_dict(error_type: str, message: str) -> dict[str, object]:
    return {"errorMessage": message, "errorType": error_type}


def error_object(error_type: str, message: str) -> bytes:
    return json.dumps(error_dict(error_type, message)).encode()


# How a start failed: the status callers get, Lambda's errorType, and its error object.
StartFailure = tuple[Status, str, dict[str, object]]


def init_error(error_type: str, error: dict[str, object]) -> StartFailure:
    """The function's own init error (its module raised): reused for many callers, so without
    the request id the worker put in it."""
    return "error", error_type, {k: v for k, v in error.items() if k != "requestId"}


def init_timeout() -> StartFailure:
    return "timeout", "Sandbox.Timedout", error_dict(
        "Sandbox.Timedout", f"Init timed out after {INIT_TIMEOUT_S:.2f} seconds")


def start_crash(message: str, error_type: str = "Runtime.ExitError") -> StartFailure:
    return "crash", error_type, error_dict(error_type, message)


class FunctionPool:
    def __init__(self, fn: FunctionConfig, config: Config, meter: Meter, logs: FunctionLogs,
                 environ: dict[str, str], capacity: Capacity, isolation: Isolation,
                 metrics: FunctionMetrics) -> None:
        self.capacity = capacity
        self.metrics = metrics
        self.isolation = isolation
        self.arn = function_arn(config.server, fn.name)
        self.meter = meter
        self._daemon = (config, environ, logs)
        self._configure(fn)
        self.workers: set[Worker] = set()
        self.starting: set[Worker] = set()
        self.idle: list[Worker] = []  # oldest-idle first; taken from the end, so the warmest
        self.queue: deque[Invocation] = deque()
        self.failure: InitFailure | None = None
        self.forkserver: ForkServer | None = None
        self._failed_server: ForkServer | None = None  # whose failure is reported already
        self.closing = False
        self.empty_since = time.monotonic()  # when its last worker went (its fork server idles)
        self._tasks: set[asyncio.Task[None]] = set()
        self._room: deque[asyncio.Future[None]] = deque()  # pollers waiting for room (see has_room)
        self.reserved = 0  # room taken by pollers whose invocation is not submitted yet
        # Why the function cannot run at all (its image could not be fetched): every invocation
        # fails at once with it, as Lambda's do on a function in the Failed state.
        self.unavailable: str | None = None

    def _configure(self, fn: FunctionConfig) -> None:
        config, environ, logs = self._daemon
        self.config = fn
        self.opt = opt_folder(config.server.data_dir, fn.layers)  # "": no layers
        self.spec = worker_spec(fn, config, environ, self.isolation, self.opt)
        self.log = logs.of(fn.name, fn.memory_mb)

    def reconfigure(self, fn: FunctionConfig) -> None:
        """New code or settings: invocations already running finish on the workers they have;
        every later one runs on a worker of the new configuration (see ``_next``)."""
        self._configure(fn)  # every worker tagged with the old configuration is now stale
        self.failure = None
        for worker in self.idle:
            worker.stop()
        self.idle.clear()
        if self.forkserver is not None:
            self.forkserver.retire()  # it closes once the workers it forked are gone
            self.forkserver = None
        self.start()

    # --- intake ----------------------------------------------------------------------------

    def submit(self, inv: Invocation) -> None:
        if self.idle:
            self._run(self.idle.pop(), inv)
            return
        now = time.monotonic()
        if self.config.max_workers == 0 or len(self.queue) >= self.config.max_queue or self.closing:
            self._throttle(inv)
        elif self.failure is not None and now < self.failure.retry_at and not self.serving:
            self._fail_init(inv, self.failure)
        elif self.unavailable is not None:
            self._fail_init(inv, InitFailure("error", UNAVAILABLE, error_dict(
                UNAVAILABLE, self.unavailable), 0.0, math.inf, 0.0))
        else:
            self.queue.append(inv)
            if len(self.workers) < self.config.max_workers:  # else there is nothing to decide
                self.scale(now)
            return
        # Finished before the caller even awaits it: its response may leave in this very step,
        # so its record is written now rather than at the end of the loop iteration.
        self.meter.file.flush()

    def has_room(self) -> bool:
        """Whether one more invocation would start at once or wait behind no more than one per
        worker: what a poller waits for before it receives more (``Intake.room``)."""
        waiting = len(self.queue) + self.reserved
        return len(self.idle) > self.reserved or \
            waiting < min(self.config.max_queue, self.config.max_workers)

    def room_waiter(self) -> asyncio.Future[None]:
        waiter = asyncio.get_running_loop().create_future()
        if self.closing:
            waiter.set_result(None)
        else:
            self._room.append(waiter)
        return waiter

    def wake_room(self, every: bool = False) -> None:
        """Wake the longest waiting poller (room was made for one), or ``every`` one (none will
        come: the function closes, or cannot serve). Waking all for one slot would wake a
        hundred async events for each that can run."""
        while self._room:
            waiter = self._room.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not every:
                    return

    def _run(self, worker: Worker, inv: Invocation) -> None:
        inv.started = time.monotonic()
        inv.cold = worker.invocations == 0
        deadline_ms = int((time.time() + self.config.timeout_s) * 1000)
        message = Invoke(request_id=inv.request_id, deadline_ms=deadline_ms, arn=self.arn,
                         payload=msgspec.Raw(inv.payload),
                         client_context=msgspec.Raw(inv.client_context) if inv.client_context else None)
        worker.invoke(inv, message, inv.started + self.config.timeout_s)

    def _next(self, worker: Worker) -> None:
        """A worker is free: give it the next queued invocation, or park it."""
        if worker.killed:
            return  # killed already (its last frame was on its way): its exit replaces it
        if self.closing:
            # The queued invocations were accepted: they run on the workers left, which stop
            # as the queue empties (the grace bounds it all).
            if self.queue:
                self._run(worker, self.queue.popleft())
            else:
                worker.stop()
        elif worker.tag is not self.config:
            worker.stop()
            if self.queue:
                self.scale(time.monotonic())  # its replacement runs the new configuration
        elif self.queue:
            if self.capacity.saturated and len(self.workers) > self.capacity.cap(self):
                worker.stop()  # over its fair share: the slot goes to a function that waits
            else:
                self._run(worker, self.queue.popleft())
                if self._room:
                    self.wake_room()
        else:
            worker.idle_since = time.monotonic()
            self.idle.append(worker)
            if self._room:
                self.wake_room()

    # --- outcomes --------------------------------------------------------------------------

    def _finish(self, inv: Invocation, outcome: Outcome) -> None:
        billed = billed_ms(outcome.duration_ms)
        if outcome.status == "throttled":
            self.metrics.throttled()
        else:
            self.metrics.ran(outcome, inv.cold)
            self.log.end(inv, outcome, billed)
        self.meter.record(self.config.name, self.config.memory_mb, inv, outcome, billed, time.time())
        if not inv.future.done():
            inv.future.set_result(outcome)
        if inv.stream is not None:  # after the outcome, which its reader looks at when it ends
            inv.stream.end()

    def _throttle(self, inv: Invocation) -> None:
        self._finish(inv, Outcome("throttled", b"", "TooManyRequestsException"))

    def _fail_init(self, inv: Invocation, failure: InitFailure) -> None:
        inv.cold = True
        body = json.dumps(failure.error | {"requestId": inv.request_id}).encode()
        self._finish(inv, Outcome(failure.status, body, failure.error_type,
                                  init_duration_ms=failure.init_duration_ms))

    def _worker_failure(self, worker: Worker, inv: Invocation, returncode: int) -> Outcome:
        memory_mb = 0
        if worker.killed == "oom":
            status, error_type = "oom", "Runtime.OutOfMemory"
            detail = "Runtime exited with error: signal: killed"
            memory_mb = max(worker.rss_mb, self.config.memory_mb)
        elif worker.killed == "timeout":
            status, error_type = "timeout", "Sandbox.Timedout"
            detail = f"Task timed out after {self.config.timeout_s:.2f} seconds"
        else:
            status, error_type = "crash", "Runtime.ExitError"
            detail = f"Runtime exited with error: {exit_text(returncode)}"
        return Outcome(status, error_object(error_type, f"RequestId: {inv.request_id} Error: {detail}"),
                       error_type, (time.monotonic() - inv.started) * 1000, memory_mb,
                       worker.init_duration_ms if inv.cold else None, worker.pid)

    # --- the workers' side (workers.process.Listener) --------------------------------------

    def worker_ready(self, worker: Worker) -> None:
        self.starting.discard(worker)
        self.metrics.initialized(worker.init_duration_ms)
        self.failure = None
        self._failed_server = None
        self._next(worker)

    def worker_result(self, worker: Worker, result: Result) -> None:
        # Timed here, on the router's clock, from the Invoke frame's send: the worker's own word
        # on its run time is not billed. (A result only comes from a busy worker: ``job`` is set.)
        inv = cast(Invocation, worker.job)
        duration_ms = (time.monotonic() - inv.started) * 1000
        worker.job = None
        payload = bytes(result.payload)
        stream = inv.stream
        if result.ok and stream is not None and stream.begun and not stream.reader:
            payload = stream.collected()  # streamed to a caller that takes the response whole
        self._finish(inv, Outcome("success" if result.ok else "error", payload,
                                  result.error_type, duration_ms, result.max_memory_mb,
                                  worker.init_duration_ms if inv.cold else None, worker.pid))
        self._next(worker)

    def worker_stream(self, worker: Worker, content_type: str, resume: Callable[[], None]) -> int:
        inv = cast(Invocation, worker.job)
        if inv.stream is None:  # its caller wants the response whole: collected, within Invoke's limit
            inv.stream = ResponseStream(reader=False)
        inv.stream.begin(content_type, resume)
        return self._daemon[0].server.max_stream_bytes if inv.stream.reader else MAX_RESPONSE

    def worker_chunk(self, worker: Worker, data: bytes) -> bool:
        stream = cast(Invocation, worker.job).stream
        return stream is None or stream.write(data)

    def worker_output(self, worker: Worker, data: bytes) -> None:
        job = worker.job
        self.log.output(job if isinstance(job, Invocation) else None, data)

    def worker_broken(self, worker: Worker) -> None:
        """Killed for a frame out of turn: it must not be handed work before its exit is seen."""
        if worker in self.idle:
            self.idle.remove(worker)

    def worker_init_failed(self, worker: Worker, error_type: str, payload: bytes) -> None:
        self.starting.discard(worker)
        self._init_failed(init_error(error_type, json.loads(payload)), worker.init_duration_ms)

    def worker_exited(self, worker: Worker, returncode: int) -> None:
        self.workers.discard(worker)
        if not self.workers:
            self.empty_since = time.monotonic()
        self.capacity.released(self)
        if worker in self.idle:
            self.idle.remove(worker)
        if worker in self.starting:  # died before it was ready, without saying why
            self.starting.discard(worker)
            self._init_failed(
                init_timeout() if worker.killed == "timeout"
                else start_crash(f"Runtime exited with error: {exit_text(returncode)}"),
                (time.monotonic() - worker.spawned) * 1000)
        elif isinstance(worker.job, Invocation):
            self._finish(worker.job, self._worker_failure(worker, worker.job, returncode))
            worker.job = None
        elif returncode not in (0, INIT_FAILED, -signal.SIGKILL) and not self.closing:
            log.warning("%s: idle worker %d exited: %s", self.config.name, worker.pid,
                        exit_text(returncode))
        self.scale(time.monotonic())
        self._turn_away_unserved()

    def _init_failed(self, failure: StartFailure, init_ms: float) -> None:
        self.metrics.initialized(init_ms)
        status, error_type, error = failure
        backoff = INIT_RETRY_S[0] if self.failure is None else min(self.failure.backoff * 2,
                                                                    INIT_RETRY_S[1])
        self.failure = InitFailure(status, error_type, error, init_ms,
                                   time.monotonic() + backoff, backoff)
        log.warning("%s: init failed (%s); next attempt in %.0f s", self.config.name, error_type,
                    backoff)
        self._fail_unserved()

    def _fail_unserved(self) -> None:
        if self.failure is not None and not self.serving:
            # Nothing can serve the queue: each waiting caller gets the init error, as on Lambda.
            while self.queue:
                self._fail_init(self.queue.popleft(), self.failure)
            self.wake_room(every=True)

    # --- scaling and deadlines -------------------------------------------------------------

    def scale(self, now: float) -> None:
        if self.closing or self.unavailable is not None:
            return
        decision = plan(Snapshot(
            queued=len(self.queue), busy=self.busy, starting=len(self.starting),
            idle_since=tuple(w.idle_since for w in self.idle),
            min_workers=self.config.min_workers, max_workers=self.capacity.cap(self),
            keep_warm_s=self.config.keep_warm_s, now=now, global_room=self.capacity.room()))
        if decision.stop:
            stopping = [self.idle[i] for i in decision.stop]
            self.idle = [w for w in self.idle if w not in stopping]
            for w in stopping:
                w.stop()
        server = self.forkserver
        if server is not None and not self.workers and not decision.start \
                and now - self.empty_since >= self.config.fork_server_idle_s:
            # Scaled to zero for long: its fork server's memory goes back too; the next cold start
            # pays the import again (its Init Duration shows it).
            log.info("%s: idle for %.0f s: stopping its fork server", self.config.name,
                     now - self.empty_since)
            server.retire()
            self.forkserver = None
        if decision.start and self.failure is not None and now < self.failure.retry_at \
                and not self.queue:
            return  # the floor waits out the init back-off; queued callers may try again
        for _ in range(decision.start):
            self._spawn(now)

    def demand(self) -> int:
        """How many workers this function could use now."""
        wanted = max(self.config.min_workers, len(self.workers) + len(self.queue))
        return min(self.config.max_workers, wanted)

    def _spawn(self, now: float) -> None:
        worker = (ApiWorker if self.spec.command else Worker)(self, tag=self.config)
        self.capacity.started()
        self.workers.add(worker)
        self.starting.add(worker)
        stream = {"AWS_LAMBDA_LOG_STREAM_NAME":
                  f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{os.urandom(16).hex()}"}
        task = asyncio.ensure_future(self._start_worker(worker, stream, now + INIT_TIMEOUT_S))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_worker(self, worker: Worker, env: dict[str, str], deadline: float) -> None:
        """Start a worker: forked warm from the function's fork server, or a fresh process."""
        server = self._fork_server()
        try:
            if problem := entrypoint_problem(self.spec, self.config.code, self.opt):
                raise BadEntrypoint(problem)
            await server.fork(worker, env, deadline)
            return
        except BadEntrypoint as e:
            failure = start_crash(str(e), "Runtime.InvalidEntrypoint")
        except InitFailed as e:
            failure: StartFailure | None = init_error(e.error_type, e.error)
        except TimeoutError:
            failure = init_timeout()
        except ForkServerGone as e:
            failure = start_crash(f"Runtime exited with error: {exit_text(e.args[0])}")
        except ForkFailed as e:
            failure = start_crash(f"cannot start a worker: {e}")
        except SandboxFailed as e:
            failure = start_crash(f"cannot start the sandbox: {e}", "Runtime.InvalidEntrypoint")
        except OSError as e:
            failure = start_crash(f"cannot start {self.spec.python}: {e.strerror}",
                                  "Runtime.InvalidEntrypoint")
        except Retired:
            failure = None
        self.workers.discard(worker)
        self.starting.discard(worker)
        self.capacity.released(self)
        if failure is None or worker.tag is not self.config:
            # Started for a configuration that has since changed: not a failure of the new one.
            self.scale(time.monotonic())
        elif server is not self._failed_server:
            # Every worker waiting on a failed fork server lands here; the failure counts once.
            self._failed_server = server
            self._init_failed(failure, (time.monotonic() - worker.spawned) * 1000)
        else:
            self._fail_unserved()

    def start(self) -> None:
        """Start the fork server and the warm floor (min_workers). The fork server starts even for
        a function scaled to zero, so that its first burst forks warm workers (an init error
        waits for a caller to see it)."""
        if self.unavailable is not None:
            return
        self._fork_server().ready.add_done_callback(self._prepared)
        self.scale(time.monotonic())

    def code_in_use(self) -> set[str]:
        """The code folders its workers run in (an update leaves running invocations on their
        old workers, in their old folders) and the one its next workers will."""
        return {self.config.code, *(cast(FunctionConfig, w.tag).code for w in self.workers)}

    def _prepared(self, ready: asyncio.Future[None]) -> None:
        error = None if ready.cancelled() else ready.exception()
        if error is not None and not isinstance(error, Retired):
            log.warning("%s: the fork server's init failed (%r); the first invocation retries",
                        self.config.name, error)

    def _fork_server(self) -> ForkServer:
        if self.forkserver is None or self.forkserver.closed:
            self.forkserver = ForkServer(self.config.name, self.isolation.tree,
                                         lambda data: self.log.output(None, data))
            task = asyncio.ensure_future(self.forkserver.start(
                self.spec, time.monotonic() + INIT_TIMEOUT_S))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self.forkserver

    def check_limits(self, now: float) -> None:
        """Kill workers past their deadline, and busy ones past their memory."""
        memory_mb = self.config.memory_mb
        poll = self.isolation.tree is None  # else the kernel holds each worker to memory_mb
        for worker in self.workers:
            if worker.state not in ("busy", "starting") or worker.killed:
                continue
            if now >= worker.deadline:
                worker.kill("timeout")
            elif poll and worker.state == "busy" and worker.rss() > memory_mb:
                worker.kill("oom")

    # --- shutdown --------------------------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Whether any worker is, or may soon be, able to take an invocation."""
        return any(w.state in ("idle", "busy", "starting") for w in self.workers)

    @property
    def busy(self) -> int:
        return len(self.workers) - len(self.starting) - len(self.idle)

    def close(self) -> None:
        """Stop taking work: what runs may finish, and what is queued runs after it on the same
        workers; no worker starts. What no worker is left to run is turned away."""
        self.closing = True
        self.wake_room(every=True)
        for worker in self.idle:
            worker.stop()
        self.idle.clear()
        self._turn_away_unserved()

    def _turn_away_unserved(self) -> None:
        """Closing, with invocations queued and no worker left to run them (the last one crashed,
        or was killed at the end of the grace): each caller is told it was not run."""
        if self.closing and not self.serving:
            while self.queue:
                self._finish(self.queue.popleft(), Outcome("throttled", b"", "ServiceUnavailable"))

    async def stopped(self) -> None:
        """Wait until every worker has exited (callers bound this with a timeout)."""
        while self.workers or self._tasks:
            await asyncio.wait([*(w.gone for w in self.workers), *self._tasks])
        self._turn_away_unserved()  # a start that ended without a worker leaves none to run them
        if self.forkserver is not None:  # only now: it reports its workers' exits
            self.forkserver.close()

    def kill_all(self) -> None:
        for worker in self.workers:
            worker.kill()
        if self.forkserver is not None:
            self.forkserver.kill()


def exit_text(returncode: int) -> str:
    """``exit status 3`` / ``signal: killed``, as Lambda words a runtime's exit."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"signal: {SIGNAL_WORDS.get(name, name.lower())}"
    return f"exit status {returncode}"


# As Go (and so Lambda's runtime API) words them.
SIGNAL_WORDS = {"SIGKILL": "killed", "SIGTERM": "terminated", "SIGSEGV": "segmentation fault",
                "SIGABRT": "aborted", "SIGBUS": "bus error", "SIGINT": "interrupt",
                "SIGHUP": "hangup", "SIGQUIT": "quit", "SIGILL": "illegal instruction",
                "SIGFPE": "floating point exception", "SIGPIPE": "broken pipe",
                "SIGUSR1": "user defined signal 1", "SIGUSR2": "user defined signal 2",
                "SIGXCPU": "CPU time limit exceeded"}
