"""The Python runtime: the program that runs inside a worker process.

Started by the router as ``pythonX.Y -I -u bootstrap.py IN_FD OUT_FD`` (a fresh worker), or as
``… bootstrap.py forkserver CTRL_FD`` (a function's fork server, which forks ready workers). Either
way the handler named by ``_HANDLER`` is imported from ``LAMBDA_TASK_ROOT`` once, ``ready`` (or
``init_error``) is reported, and a worker serves one invocation at a time until its input closes.

This file must run under any ``pythonX.Y`` a function names, not only the router's own interpreter,
so it uses the standard library only (msgspec and friends are compiled for the router's Python) and
is a single file: ``-I`` keeps its folder off ``sys.path``, so nothing of Headwater can shadow or be
shadowed by the function's own modules. The frames it writes are the JSON forms of the Structs in
``workers/protocol.py``; the event payload is inlined in the frame as raw JSON, so one ``json.loads``
decodes both and the router never touches it.
"""

from __future__ import annotations

import decimal
import fcntl
import importlib
import json
import logging
import os
import resource
import select
import signal
import socket
import struct
import sys
import termios
import time
import traceback

HEADER = struct.Struct(">I")
READ_SIZE = 1 << 16
MAX_RESPONSE = 6_291_556  # as workers/protocol.py: the router kills a worker that sends more
INIT_FAILED = 3  # exit status after an init error: the router does not count it as a crash


class Fault(Exception):
    """An error of the runtime itself (not the handler), in Lambda's ``Runtime.*`` vocabulary."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []


# --- the handler -----------------------------------------------------------------------------


def load_handler(spec: str):
    """Import ``module.function`` (``pkg/mod.function`` and ``pkg.mod.function`` too)."""
    try:
        modname, fname = spec.rsplit(".", 1)
    except ValueError as e:
        raise Fault("Runtime.MalformedHandlerName", f"Bad handler '{spec}': {e}") from None
    modname = modname.replace("/", ".")
    if modname.split(".")[0] in sys.builtin_module_names:
        raise Fault(
            "Runtime.BuiltInModuleConflict",
            f"Cannot use built-in module {modname} as a handler module",
        )
    try:
        module = importlib.import_module(modname)
    except SyntaxError as e:
        raise Fault("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}",
                    _stack(e)) from None
    except ImportError as e:
        raise Fault("Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}") from None
    except Exception as e:
        raise Fault(type(e).__name__, str(e), _stack(e)) from None
    handler = getattr(module, fname, None)
    if handler is None:
        raise Fault("Runtime.HandlerNotFound", f"Handler '{fname}' missing on module '{modname}'")
    return handler


def _stack(e: BaseException) -> list[str]:
    """The traceback's frames as Lambda lists them, with this file's own frames left out."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename != __file__]
    return traceback.format_list(frames)


def error_body(error_type: str, message: str, stack: list[str], request_id: str = "") -> bytes:
    body = {"errorMessage": message, "errorType": error_type, "requestId": request_id,
            "stackTrace": stack}
    return json.dumps(body).encode()


# --- the context -----------------------------------------------------------------------------


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self) -> None:
        self.cognito_identity_id = None
        self.cognito_identity_pool_id = None


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code",
                 "app_package_name")

    def __init__(self, fields: dict) -> None:
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: dict) -> None:
        client = fields.get("client")
        self.client = Client(client) if isinstance(client, dict) else None
        self.custom = fields.get("custom")
        self.env = fields.get("env")


class LambdaContext:
    """The ``context`` argument, with the attributes of Lambda's Python runtime."""

    def __init__(self, request_id: str, deadline_ms: int, arn: str, client_context: dict | None,
                 environ: dict) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = arn
        self.function_name = environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.memory_limit_in_mb = environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = CognitoIdentity()
        self.client_context = ClientContext(client_context) if client_context is not None else None
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"function_name={self.function_name},function_version={self.function_version},"
                f"invoked_function_arn={self.invoked_function_arn}])")


# --- logging ---------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id, as Lambda's log format shows it."""

    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


def configure_logging(request_ids: RequestIdFilter) -> None:
    # Lambda's runtime gives the root logger a handler, so `logger.setLevel(INFO); logger.info()`
    # prints; without one Python would drop everything below WARNING.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    handler.formatter.converter = time.gmtime
    handler.addFilter(request_ids)
    logging.getLogger().addHandler(handler)


# --- the channel -----------------------------------------------------------------------------


class Channel:
    """Length-prefixed frames over a pair of pipe file descriptors, blocking."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.buf = bytearray()

    def recv(self) -> bytes | None:
        while True:
            if len(self.buf) >= 4:
                (size,) = HEADER.unpack_from(self.buf)
                if len(self.buf) >= 4 + size:
                    frame = bytes(self.buf[4:4 + size])
                    del self.buf[:4 + size]
                    return frame
            chunk = os.read(self.in_fd, READ_SIZE)
            if not chunk:
                return None
            self.buf += chunk

    def send(self, body: bytes) -> None:
        view = memoryview(HEADER.pack(len(body)) + body)
        while view:
            view = view[os.write(self.out_fd, view):]


def output_pending() -> bool:
    """Whether bytes the function wrote to stdout/stderr still sit unread in the output pipe.

    The router drains that pipe before it closes the invocation only when this says so: the common
    case (nothing printed, or already read) costs it no extra system call.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # the function closed or replaced its stream: not our failure
            pass
    pending = bytearray(4)
    try:
        fcntl.ioctl(1, termios.FIONREAD, pending)
    except OSError:
        return True
    return pending != b"\0\0\0\0"


class Memory:
    """The peak resident memory of each invocation, not of the worker's whole life.

    Writing ``5`` to ``/proc/self/clear_refs`` resets the high-water mark of the process's memory
    before each invocation; ``getrusage`` (``max_rss_mb``) then reports the peak since (it reads
    that mark, and is a fraction of the cost of parsing ``/proc/self/status``). Where /proc is
    missing, the peak is the worker's lifetime one.
    """

    def __init__(self) -> None:
        try:
            self.clear = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            self.clear = -1

    def reset(self) -> None:
        if self.clear >= 0:
            try:
                os.write(self.clear, b"5")
            except OSError:
                pass


def max_rss_mb() -> int:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + 1023) // 1024


def log_error(error_type: str, message: str, stack: list[str]) -> None:
    """Print the error as Lambda's runtime does; a function that closed stdout loses only this."""
    try:
        print(f"[ERROR] {error_type}: {message}\nTraceback (most recent call last):\n"
              + "".join(stack), end="", file=sys.stdout)
    except (OSError, ValueError):
        pass


def _decimal(o):
    if isinstance(o, decimal.Decimal):
        return int(o) if o == o.to_integral_value() else float(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


# --- the loop --------------------------------------------------------------------------------


def result_frame(ok: bool, payload: bytes, error_type: str | None, request_id: str) -> bytes:
    if len(payload) > MAX_RESPONSE:
        ok, error_type = False, "Function.ResponseSizeTooLarge"
        payload = error_body(error_type, (
            f"Response payload size ({len(payload)} bytes) exceeded maximum allowed payload size "
            f"({MAX_RESPONSE} bytes)."), [], request_id)
    # Formatted by hand: json.dumps of the header dict costs as much as the rest of an invocation.
    head = (f'{{"type":"result","ok":{"true" if ok else "false"},'
            f'"error_type":{json.dumps(error_type) if error_type else "null"},'
            f'"max_memory_mb":{max_rss_mb()},'
            f'"output_pending":{"true" if output_pending() else "false"},"payload":')
    return head.encode() + payload + b"}"


class Runtime:
    """A loaded handler and what it needs to serve invocations: one per worker process."""

    def __init__(self, handler, environ: dict, request_ids: RequestIdFilter) -> None:
        self.handler = handler
        self.environ = environ
        self.request_ids = request_ids
        self.memory = Memory()

    def invoke(self, message: dict) -> bytes:
        request_id = message["request_id"]
        self.request_ids.request_id = request_id
        trace_id = message.get("trace_id")
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
        context = LambdaContext(request_id, message["deadline_ms"], message["arn"],
                                message.get("client_context"), self.environ)
        self.memory.reset()
        try:
            result = self.handler(message["payload"], context)
        except Exception as e:
            stack = _stack(e)
            log_error(type(e).__name__, str(e), stack)
            return result_frame(False, error_body(type(e).__name__, str(e), stack, request_id),
                                type(e).__name__, request_id)
        try:
            payload = json.dumps(result, default=_decimal, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as e:
            body = error_body("Runtime.MarshalError", f"Unable to marshal response: {e}", [],
                              request_id)
            return result_frame(False, body, "Runtime.MarshalError", request_id)
        return result_frame(True, payload, None, request_id)

    def serve(self, channel: Channel) -> int:
        output_pending()
        channel.send(b'{"type": "ready"}')
        while True:
            frame = channel.recv()
            if frame is None:
                return 0
            channel.send(self.invoke(json.loads(frame)))


def init_error_frame(f: Fault) -> bytes:
    return (json.dumps({"type": "init_error", "error_type": f.error_type}).encode()[:-1]
            + b', "payload": ' + error_body(f.error_type, f.message, f.stack) + b"}")


def prepare_process(environ: dict) -> None:
    task_root = environ["LAMBDA_TASK_ROOT"]
    extra = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    runtime = [environ["LAMBDA_RUNTIME_DIR"]] if environ.get("LAMBDA_RUNTIME_DIR") else []
    sys.path[:0] = [task_root, *extra, *runtime]
    os.chdir(task_root)


def init() -> tuple[dict, RequestIdFilter, object]:
    """Prepare this process and import the handler; raises ``Fault``."""
    environ = dict(os.environ)
    prepare_process(environ)
    request_ids = RequestIdFilter()
    configure_logging(request_ids)
    return environ, request_ids, load_handler(environ["_HANDLER"])


def close_other_fds(keep: set) -> None:
    """Close every descriptor but ``keep`` (and stdio): whatever a parent leaked, by mistake or
    by design (bubblewrap's hand-shake pipes), must not reach the function."""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def open_channel(in_fd: int, out_fd: int) -> Channel:
    # Subprocesses the handler starts must not inherit the channel.
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    return Channel(in_fd, out_fd)


def serve_main(in_fd: int, out_fd: int) -> int:
    """A worker started afresh: init, then serve."""
    channel = open_channel(in_fd, out_fd)
    try:
        environ, request_ids, handler = init()
    except Fault as f:
        channel.send(init_error_frame(f))
        return INIT_FAILED
    return Runtime(handler, environ, request_ids).serve(channel)


# --- the fork server ---------------------------------------------------------------------------


def forkserver_main(ctrl_fd: int, mode: str, command: list) -> int:
    """Import the handler once, then fork a ready worker each time the router asks (``mode``
    "fork"); or import nothing and start each worker as a fresh interpreter ("exec") or as
    ``command``, a Runtime API client ("api"), by fork and exec.

    Runs single-threaded (the router never forks; this process exists to), inside the function's
    sandbox, so its workers are in the sandbox too. It reaps its workers and reports their exit
    status, since the router is not their parent. Messages on the control socket
    (SOCK_SEQPACKET) are JSON; a worker's three pipe ends and a pidfd (the router's pid namespace
    is not this one's) travel as SCM_RIGHTS.
    """
    close_other_fds({ctrl_fd})
    ctrl = socket.socket(fileno=ctrl_fd)
    ctrl.set_inheritable(False)
    # The function's environment comes as the first message, not through exec: bubblewrap and
    # setpriv, which build the sandbox with the privilege to, then this interpreter, start under
    # the router's PATH alone, never a function's PATH, LD_PRELOAD or LD_LIBRARY_PATH.
    os.environ.clear()
    os.environ.update(json.loads(ctrl.recv(1 << 20)))
    time.tzset()  # a TZ of the function's
    handler = None
    environ, request_ids = dict(os.environ), RequestIdFilter()
    if mode == "fork":
        try:
            environ, request_ids, handler = init()
        except Fault as f:
            ctrl.send(init_error_frame(f))
            return INIT_FAILED
    output_pending()
    become_subreaper()
    ctrl.send(b'{"type": "ready"}')
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([ctrl, wake_r], [], [])
        if wake_r in readable:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            reap(ctrl, children)
        if ctrl in readable:
            message = ctrl.recv(1 << 16)
            if not message:  # the router is gone: so are we (idle workers see their EOF too)
                return 0
            request = json.loads(message)
            try:
                pid = fork_worker(ctrl, request, handler, command, environ, request_ids)
            except OSError as e:  # out of processes or descriptors: this worker only fails
                ctrl.send(json.dumps({"type": "fork_failed", "id": request["id"],
                                      "message": str(e)}).encode())
                continue
            children.add(pid)


def become_subreaper() -> None:
    """Orphans of dead workers (what a handler started and left) come to this process, which reaps
    them, instead of to init, which in a container may never do so."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass  # not Linux: orphans go to init as usual


def reap(ctrl: socket.socket, children: set[int]) -> None:
    """Reap every child that has exited: workers (reported to the router) and adopted orphans."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            ctrl.send(json.dumps({"type": "exited", "pid": pid, "returncode": code}).encode())


def runtime_api_listener() -> socket.socket:
    """The socket a Runtime API worker's router serves it on: in the sandbox's network, where
    only this function's processes can reach it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def fork_worker(ctrl: socket.socket, request: dict, handler, command: list, environ: dict,
                request_ids: RequestIdFilter) -> int:
    opened = []
    listener = None
    try:
        for _ in range(3):
            opened += os.pipe()
        if command:
            listener = runtime_api_listener()
            request["env"]["AWS_LAMBDA_RUNTIME_API"] = "127.0.0.1:%d" % listener.getsockname()[1]
        pid = os.fork()
    except OSError:
        for fd in opened:
            os.close(fd)
        if listener is not None:
            listener.close()
        raise
    to_r, to_w, from_r, from_w, log_r, log_w = opened
    if pid == 0:
        code = 1
        try:
            os.setsid()  # its own process group: a kill takes whatever it starts, too
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.dup2(log_w, 1)
            os.dup2(log_w, 2)
            if command:  # a Runtime API client: its output is all it keeps
                close_other_fds(set())
                os.environ.update(request["env"])
                try:
                    # A bare name (an image's ENTRYPOINT "python3") is looked up on the worker's PATH.
                    os.execvp(command[0], command)
                except OSError as e:
                    os.write(2, ("cannot run %s: %s\n" % (command[0], e.strerror)).encode())
                    os._exit(127)
            close_other_fds({to_r, from_w})
            os.environ.update(request["env"])
            if handler is None:  # a fresh interpreter, with only these descriptors
                os.set_inheritable(to_r, True)
                os.set_inheritable(from_w, True)
                os.execv(sys.executable, [sys.executable, "-I", "-S", "-u", os.path.abspath(__file__),
                                          str(to_r), str(from_w)])
            environ.update(request["env"])
            code = Runtime(handler, environ, request_ids).serve(open_channel(to_r, from_w))
        except SystemExit as e:  # the handler called sys.exit: exit as it asked
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            os._exit(code)
    for fd in (to_r, from_w, log_w):
        os.close(fd)
    sent = [to_w, from_r, log_r]
    try:
        sent.append(os.pidfd_open(pid))
        if listener is not None:
            sent.append(listener.fileno())
        socket.send_fds(ctrl, [json.dumps({"type": "forked", "id": request["id"],
                                           "pid": pid}).encode()], sent)
    except OSError:
        os.kill(pid, signal.SIGKILL)  # the router cannot know it: it must not live on
        raise
    finally:
        for fd in sent[:4]:
            os.close(fd)
        if listener is not None:
            listener.close()
    return pid


def main(argv: list[str]) -> int:
    if argv[1] == "forkserver":  # FD MODE LABEL COMMAND…, the label only for ps
        return forkserver_main(int(argv[2]), argv[3], argv[5:])
    return serve_main(int(argv[1]), int(argv[2]))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
