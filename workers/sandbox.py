"""A function's sandbox: the bubblewrap command line around its fork server, and its network.

The fork server of a function starts inside the sandbox and every worker is forked (or exec'd) from
it, so isolation is paid once per function, not once per cold start. What the sandbox gives:

- its own PID, IPC, UTS and mount namespaces; a root of its own in which the system's ``/usr`` and
  the runtime's folders are read-only, the code read-only at ``/var/task``, the bootstrap at
  ``/var/runtime``, the function's layers read-only at ``/opt``, and a ``/tmp`` bounded by
  ``ephemeral_storage_mb``; nothing else of the host;
- an unprivileged host uid: a distinct one per function when the daemon runs as root (bubblewrap
  run by root sets up the mounts, then ``setpriv`` drops to the function's uid, its capabilities
  and bounding set; a user namespace alone would leave it root on the host), the daemon's own
  user in a user namespace otherwise; ``no_new_privs`` and a new session either way;
- a network namespace: by default pasta gives it outside addresses but none of the host's loopback
  except the TCP ports its config allows; ``none`` leaves it only its own loopback; ``host``
  shares the daemon's.

``argv`` is pure (tested with tables); the pool's fork server runs the command, reads bubblewrap's
``--info-fd`` for the sandbox's host pid, puts it in its cgroups, attaches pasta, then lets it go on
through ``--block-fd``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path, PurePosixPath

import msgspec

TASK_ROOT = "/var/task"
RUNTIME_DIR = "/var/runtime"
OPT = "/opt"  # where a function's layers are
# In an image's sandbox, where the host's files the fork server needs are (each at its host path
# below it): out of the way of an image's own /var/runtime, /opt and the like.
HOST_DIR = "/.headwater"
SANDBOX_UID = 993  # the uid a function sees when the sandbox maps one (Lambda's sbx_user1051)

# Host files a function may need that hold nothing of the daemon's: name resolution, certificates,
# time zones, the dynamic linker's cache.
ETC_FILES = ("/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf",
             "/etc/ld.so.cache", "/etc/localtime", "/etc/ssl", "/etc/ca-certificates",
             "/etc/alternatives", "/etc/mime.types", "/etc/protocols", "/etc/services")
# Host files bound over an image's own (as a container runtime does), so that names resolve.
IMAGE_ETC_FILES = ("/etc/resolv.conf", "/etc/hosts")
MERGED_USR = ("bin", "lib", "lib64", "lib32", "libx32", "sbin")


class Network(msgspec.Struct, frozen=True):
    mode: str  # "default" | "none" | "host"
    ports: tuple[int, ...] = ()  # host loopback TCP ports the function may reach


class Sandbox(msgspec.Struct, frozen=True):
    """How one function's sandbox is built."""

    uid: int | None  # the host uid to drop to (a root daemon); None: a user namespace
    code: str  # host folder, read-only at /var/task
    bootstrap: str  # host path of the runtime's bootstrap, read-only in /var/runtime
    runtime: tuple[str, ...]  # the interpreter's folders, read-only at the same paths
    tmp_mb: int
    network: Network
    hostname: str = "sandbox"
    files: tuple[str, ...] = ()  # host files of the runtime's own, read-only in /var/runtime
    opt: str = ""  # host folder of the function's layers, read-only at /opt ("": no layers)
    # A container image's unpacked rootfs: the sandbox's root, read-only, instead of the host's
    # /usr (``code`` is then unused, the runtime's folders and files are under HOST_DIR), and
    # the folder its workers start in (the image's WORKDIR).
    root: str = ""
    cwd: str = TASK_ROOT
    setpriv: tuple[str, ...] = ("setpriv",)  # how setpriv runs in the sandbox (an image has none)


def runtime_path(host: str) -> str:
    """Where a file of the runtime's own is in the sandbox."""
    return f"{RUNTIME_DIR}/{PurePosixPath(host).name}"


def bootstrap_path(sandbox: Sandbox) -> str:
    return HOST_DIR + sandbox.bootstrap if sandbox.root else runtime_path(sandbox.bootstrap)


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` for each folder above ``path`` not made yet, world-readable: bubblewrap would
    make them 0700 and the unprivileged function could not reach what is bound below them."""
    out: list[str] = []
    for parent in reversed(PurePosixPath(path).parents):
        text = str(parent)
        if text != "/" and text not in made:
            made.add(text)
            out += ["--perms", "0755", "--dir", text]
    return out


def argv(sandbox: Sandbox, command: list[str], info_fd: int, block_fd: int | None,
         root: str = "/", seccomp_fd: int | None = None) -> list[str]:
    """bubblewrap's command line around ``command``. ``root`` is where the host's /usr and /etc
    are looked for (tests give another); ``seccomp_fd`` holds the filter to load
    (``workers.seccomp``)."""
    net = sandbox.network.mode
    args = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", sandbox.hostname]
    if net != "host":
        args.append("--unshare-net")
    if sandbox.uid is None:
        args += ["--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
                 "--gid", str(SANDBOX_UID)]
    else:
        # Only what setpriv needs to drop to the function's uid; it then drops these too.
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
                 "--cap-add", "CAP_SETPCAP"]
    args += _image_root(sandbox) if sandbox.root else _host_root(sandbox, root)
    args += [
             "--proc", "/proc", "--dev", "/dev", "--chdir", sandbox.cwd, "--info-fd", str(info_fd)]
    if block_fd is not None:
        args += ["--block-fd", str(block_fd)]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    args.append("--")
    if sandbox.uid is not None:
        args += [*sandbox.setpriv, f"--reuid={sandbox.uid}", f"--regid={sandbox.uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return args + command


def _tmp(sandbox: Sandbox) -> list[str]:
    return ["--perms", "1777", "--size", str(sandbox.tmp_mb * 1024 * 1024), "--tmpfs", "/tmp"]


def _image_root(sandbox: Sandbox) -> list[str]:
    """An image's rootfs as the root, read-only (its mount points were made when it was unpacked:
    nothing can be created in it); the host's resolver files over its own; the fork server's
    interpreter and libraries under HOST_DIR, on a tmpfs made read-only once they are bound."""
    args = ["--ro-bind", sandbox.root, "/"]
    for path in IMAGE_ETC_FILES:
        # Only over a plain file of the image's: its links are resolved on the host here.
        inside = [Path(sandbox.root, "etc"), Path(sandbox.root, path.lstrip("/"))]
        if Path(path).exists() and not any(p.is_symlink() for p in inside) and inside[1].is_file():
            args += ["--ro-bind", path, path]
    args += _tmp(sandbox)
    made = {HOST_DIR}
    args += ["--perms", "0755", "--tmpfs", HOST_DIR]
    for host in (*sandbox.runtime, *sandbox.files, sandbox.bootstrap):
        args += [*_parents(HOST_DIR + host, made), "--ro-bind", host, HOST_DIR + host]
    return [*args, "--remount-ro", HOST_DIR]


def _host_root(sandbox: Sandbox, root: str) -> list[str]:
    """The host's /usr and a few /etc files, the runtime's folders at their own paths, the code
    at /var/task and the runtime's files in /var/runtime."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in MERGED_USR:
        host = Path(root, name)
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir():
            args += ["--ro-bind", f"/{name}", f"/{name}"]
    made: set[str] = set()
    for path in ETC_FILES:
        if Path(root, path.lstrip("/")).exists():
            args += [*_parents(path, made), "--ro-bind", path, path]
    # /tmp first: a runtime that lives under /tmp (a virtualenv made there) is bound over it, not
    # hidden by it.
    args += _tmp(sandbox)
    made.add("/tmp")
    for folder in sandbox.runtime:
        if not folder.startswith("/usr/"):
            args += [*_parents(folder, made), "--ro-bind", folder, folder]
    if sandbox.opt:
        # A runtime the host keeps under /opt is hidden for a function with layers, as /opt is
        # the layers' alone on Lambda too.
        args += ["--ro-bind", sandbox.opt, OPT]
    args += [*_parents(TASK_ROOT, made), "--ro-bind", sandbox.code, TASK_ROOT,
             *_parents(bootstrap_path(sandbox), made), "--ro-bind", sandbox.bootstrap,
             bootstrap_path(sandbox)]
    for file in sandbox.files:
        args += ["--ro-bind", file, runtime_path(file)]
    return args


def pasta_argv(sandbox: Sandbox, netns_fd: int, userns_fd: int | None) -> list[str]:
    """pasta, attached to the sandbox's network namespace (and, in a user namespace, to that):
    outside addresses through its own stack, the host's loopback only on the allowed ports
    (``-T``), nothing forwarded inwards, and no mapping of the gateway address to the host.

    The namespaces are passed as descriptors the router opened: pasta drops its capabilities
    before it opens a path, and the sandbox, being non-dumpable, is then out of its reach. pasta
    stays in the foreground, a child of the router that ``setpriv --pdeathsig`` ends with it: it
    holds the namespace open, so it would outlive the sandbox and a killed daemon otherwise."""
    ports = ",".join(map(str, sandbox.network.ports)) or "none"
    args = ["setpriv", "--pdeathsig", "SIGKILL", "--", "pasta", "--quiet", "--foreground",
            "--config-net", "-t", "none", "-u", "none", "-T", ports, "-U", "none", "--no-map-gw",
            "--netns", f"/proc/self/fd/{netns_fd}"]
    if userns_fd is not None:
        return [*args, "--userns", f"/proc/self/fd/{userns_fd}"]
    # Run as root, pasta would switch to nobody before it joins a namespace only root may join.
    return [*args, "--netns-only", "--runas", "0:0"]


def has_default_route(route_table: str) -> bool:
    """Whether /proc/PID/net/route lists a default route: pasta has configured the namespace."""
    return any(line.split()[1:2] == ["00000000"] for line in route_table.splitlines()[1:])


def missing_tools() -> list[str]:
    """The sandbox's programs that are not installed (with the Debian package that has each)."""
    wanted = {"bwrap": "bubblewrap", "pasta": "passt", "setpriv": "util-linux"}
    return [f"{tool} (package {package})" for tool, package in wanted.items()
            if shutil.which(tool) is None]
