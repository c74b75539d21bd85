"""A handler that tries, as an attacker inside a function would, every way out of its sandbox, and
reports what each attempt got. The test names the targets (host paths, pids, ports) in the event."""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time


def _try(action):
    try:
        result = action()
    except OSError as e:
        return {"ok": False, "error": type(e).__name__, "errno": e.errno}
    except Exception as e:
        return {"ok": False, "error": type(e).__name__}
    return {"ok": True, "result": result if isinstance(result, (str, int, type(None))) else repr(result)}


def _read(path):
    with open(path, "rb") as f:
        return f.read(200).decode(errors="replace")


def _read_all(path):
    with open(path) as f:
        return f.read()


def _append(path):
    with open(path, "ab") as f:
        f.write(b"# planted\n")


def _connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=1)
    s.close()


def _ptrace(pid):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, pid, None, None) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _syscall(*args):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(*args) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def _fill_tmp(mb):
    with open("/tmp/fill", "wb") as f:
        chunk = b"x" * (1 << 20)
        for _ in range(mb):
            f.write(chunk)
            f.flush()


def probe(event, context):
    report = {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        "fds": {fd: _try(lambda fd=fd: os.readlink(f"/proc/self/fd/{fd}"))
                for fd in os.listdir("/proc/self/fd")},
        "environ": dict(os.environ),
    }
    report["status"] = _read_all("/proc/self/status")
    report["cap_eff"] = report["status"].split("CapEff:")[1].split()[0]
    for path in event.get("read", []):
        report[f"read {path}"] = _try(lambda path=path: _read(path))
    for path in event.get("write", []):
        report[f"write {path}"] = _try(lambda path=path: _append(path))
    for pid in event.get("kill", []):
        report[f"kill {pid}"] = _try(lambda pid=pid: os.kill(pid, signal.SIGKILL))
        report[f"ptrace {pid}"] = _try(lambda pid=pid: _ptrace(pid))
    for port in event.get("connect", []):
        report[f"connect {port}"] = _try(lambda port=port: _connect(port))
    if "fill_tmp_mb" in event:
        report["fill tmp"] = _try(lambda: _fill_tmp(event["fill_tmp_mb"]))
        os.unlink("/tmp/fill") if os.path.exists("/tmp/fill") else None
    report["write /var/task"] = _try(lambda: _append("/var/task/escape.py"))
    report["setuid 0"] = _try(lambda: os.setuid(0))
    # The kernel's surface a process without capabilities can still reach (x86_64 numbers).
    report["unshare user"] = _try(lambda: _syscall(272, 0x10000000))
    report["bpf"] = _try(lambda: _syscall(321, 0, 0, 0))
    report["io_uring"] = _try(lambda: _syscall(425, 8, 0))
    return report


def fork_bomb(event, context):
    """Forks until the kernel says no (bounded by the count asked for), then reports the count."""
    children = []
    error = None
    for _ in range(event.get("n", 500)):
        try:
            pid = os.fork()
        except OSError as e:
            error = e.errno
            break
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"forked": len(children), "errno": error}


def child_allocates(event, context):
    """The memory is taken by a child process, not the worker: the limit must cover it too."""
    code = f"b = bytearray({event['mb']} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n" \
           "import time\ntime.sleep(5)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True)
    return {"child_returncode": done.returncode}
