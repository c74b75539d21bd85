"""The sandbox, tried as an attacker inside a function would: a handler attempts every escape and
reports what it got; each must fail while the daemon and other functions go on untouched."""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RUNTIME, Daemon, function_toml, untimed
from test_limits import fork_servers

from router.config import parse
from router.run.isolation import Isolation
from workers.cgroups import dynmods_remount, open_tree

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="per-function uids need a root daemon")

SECRET_TOKEN = "s3cr3t-token-only-in-config"


@pytest.fixture(scope="module")
def granted() -> Iterator[int]:
    """A TCP service on the host's loopback that one function is allowed to reach."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


@pytest.fixture(scope="module")
def daemon(make_daemon, granted: int) -> Daemon:  # type: ignore[no-untyped-def]
    functions = "".join([
        # /tmp is memory (tmpfs), charged to the worker: 1 GB lets /tmp's own 512 MB bound show.
        function_toml("attacker", "escape.probe", timeout_s=20, memory_mb=1024,
                      ephemeral_storage_mb=512),
        function_toml("granted", "escape.probe", allow=[f"127.0.0.1:{granted}"]),
        function_toml("offline", "escape.probe", network="none"),
        function_toml("victim", "outcomes.echo", env={"VICTIM_SECRET": "victim-env-secret"}),
        function_toml("bomb", "escape.fork_bomb", timeout_s=20),
        function_toml("hungry", "escape.child_allocates", memory_mb=128, timeout_s=20),
        function_toml("fresh", "escape.probe", fork_server=False),
        function_toml("liar", "liar.handler"),
        function_toml("mute", "mute.handler", timeout_s=30),
    ])
    server = f'tokens = ["{SECRET_TOKEN}"]\n[sandbox]\npids_max = 64\n'
    return make_daemon(functions, {"functions/liar.py": LIAR, "functions/mute.py": MUTE}, server=server)


# A module that, at import (in its fork server), speaks on the fork server's control socket itself.
LIAR = """
import os, socket, stat
for name in os.listdir("/proc/self/fd"):
    try:
        if stat.S_ISSOCK(os.fstat(int(name)).st_mode):
            s = socket.socket(fileno=os.dup(int(name)))
            s.send(b'{"type": "exited", "pid": "all", "returncode": 0}')
            s.send(b"not json at all")
    except OSError:
        pass

def handler(event, context):
    return "unreachable"
"""

# A module that, at import (in its fork server), stops the fork server reporting its workers' exits.
MUTE = """
import os, sys
sys.modules["__main__"].reap = lambda ctrl, children: None

def handler(event, context):
    if event.get("exit"):
        os._exit(3)
    return os.getpid()
"""


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET_TOKEN}"}


def attack(daemon: Daemon, name: str = "attacker", **event: object) -> dict:
    r = daemon.invoke(name, event, headers=auth())
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    return r.json()  # type: ignore[return-value]


def healthz_ms(daemon: Daemon) -> float:
    t0 = time.perf_counter()
    assert daemon.request("GET", "/healthz").status == 200
    return (time.perf_counter() - t0) * 1000


def test_secrets_files_and_other_functions_are_out_of_reach(daemon: Daemon) -> None:
    assert daemon.proc is not None
    victim_code = daemon.folder / "functions" / "outcomes.py"
    targets = [str(daemon.config_path), str(daemon.folder / "var" / "metering.jsonl"),
               f"/proc/{daemon.proc.pid}/environ", str(victim_code), "/etc/shadow",
               "/root/.bashrc", str(Path.home() / ".aws" / "credentials")]
    report = attack(daemon, read=targets, write=[str(victim_code), str(daemon.config_path)])
    for target in targets:
        assert not report[f"read {target}"]["ok"], (target, report[f"read {target}"])
    for target in (victim_code, daemon.config_path):
        assert not report[f"write {target}"]["ok"]
    assert "# planted" not in victim_code.read_text()
    assert not report["write /var/task"]["ok"]
    assert report["write /var/task"]["errno"] in (13, 30)  # not its files; a read-only mount
    assert SECRET_TOKEN not in str(report)
    assert "victim-env-secret" not in str(report)


def test_it_sees_only_its_own_processes_and_can_signal_or_trace_nothing_else(daemon: Daemon) -> None:
    assert daemon.proc is not None
    victim = daemon.invoke("victim", {}, headers=auth())
    victim_pid = daemon.record(victim.headers["x-amzn-RequestId"])["worker_pid"]
    report = attack(daemon, kill=[daemon.proc.pid, victim_pid, 1])
    assert len(report["pids"]) <= 3, report["pids"]  # the sandbox's init, fork server, itself
    assert daemon.proc.pid not in report["pids"]
    for pid in (daemon.proc.pid, victim_pid, 1):
        assert not report[f"kill {pid}"]["ok"], pid
        assert not report[f"ptrace {pid}"]["ok"], pid
    assert daemon.proc.poll() is None
    assert daemon.invoke("victim", {}, headers=auth()).status == 200


def test_what_the_system_shares_is_readable_by_the_function(daemon: Daemon) -> None:
    """Name resolution and TLS need /etc's shared files, below folders the function must enter
    (bubblewrap would make them 0700 root, which broke OpenSSL in every Node.js worker)."""
    shared = ["/etc/resolv.conf", "/etc/hosts", "/etc/ssl/openssl.cnf", "/etc/ssl/certs/ca-certificates.crt"]
    present = [path for path in shared if Path(path).exists()]
    report = attack(daemon, read=present)
    for path in present:
        assert report[f"read {path}"]["ok"], (path, report[f"read {path}"])


def test_it_runs_as_an_unprivileged_uid_of_its_own(daemon: Daemon) -> None:
    first = attack(daemon)
    other = attack(daemon, "granted")
    assert first["uid"] != 0 and other["uid"] != 0
    assert first["uid"] != other["uid"]
    assert first["cap_eff"] == "0000000000000000"
    assert "NoNewPrivs:\t1" in first["status"]
    assert not first["setuid 0"]["ok"]
    if platform.machine() == "x86_64":  # the probe's system call numbers are x86_64's
        for call in ("unshare user", "bpf", "io_uring"):
            assert first[call]["errno"] == errno.EPERM, (call, first[call])
    # As the host sees it, too (inside there is no user namespace that could remap it).
    r = daemon.invoke("attacker", {}, headers=auth())
    host_pid = daemon.record(r.headers["x-amzn-RequestId"])["worker_pid"]
    uids = Path(f"/proc/{host_pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert set(uids) == {str(first["uid"])}


def test_the_network_reaches_no_host_loopback_port_unless_granted(daemon: Daemon, granted: int) -> None:
    ports = [daemon.port, 5432, 6379, granted]
    report = attack(daemon, connect=ports)
    for port in ports:
        assert not report[f"connect {port}"]["ok"], (port, report[f"connect {port}"])
    allowed = attack(daemon, "granted", connect=[granted, daemon.port])
    assert allowed[f"connect {granted}"]["ok"], allowed[f"connect {granted}"]
    assert not allowed[f"connect {daemon.port}"]["ok"]
    offline = attack(daemon, "offline", connect=[granted])
    assert not offline[f"connect {granted}"]["ok"]


def test_tmp_is_bounded_and_the_daemon_keeps_answering(daemon: Daemon) -> None:
    report = attack(daemon, fill_tmp_mb=600)
    assert not report["fill tmp"]["ok"]
    assert report["fill tmp"]["errno"] in (27, 28)  # EFBIG (fsize) or ENOSPC (the tmpfs)
    assert healthz_ms(daemon) < 100


def test_a_worker_holds_only_its_own_descriptors(daemon: Daemon) -> None:
    # Churn: kill the attacker's fork server, so that a respawned one would show a leak.
    assert daemon.proc is not None
    for name in ("victim", "granted", "fresh"):
        daemon.invoke(name, {}, headers=auth())
    servers = fork_servers("attacker")
    assert servers
    for pid in servers:
        with contextlib.suppress(ProcessLookupError):  # one that exited since the listing
            os.kill(pid, 9)
    time.sleep(0.5)
    for name in ("attacker", "fresh"):
        fds = attack(daemon, name)["fds"]
        targets = sorted(v["result"] for v in fds.values() if v["ok"])
        kinds = [t.split(":")[0] for t in targets]
        # stdin, stdout/stderr (one pipe), its two frame pipes, and what the runtime itself
        # opened (/proc/self/clear_refs, the listing of /proc/self/fd): nothing of the router's.
        assert len(targets) <= 6, targets
        assert len({t for t in targets if t.startswith("pipe:")}) == 3, targets
        assert not any(k.startswith("socket") for k in kinds), targets
        assert all(t.startswith(("pipe:", "/dev/null", "/proc/")) for t in targets), targets


def test_the_pids_limit_stops_a_fork_bomb(daemon: Daemon) -> None:
    r = daemon.invoke("bomb", {"n": 500}, headers=auth())
    body = r.json()
    assert body["errno"] == 11, body  # EAGAIN: the cgroup's pids.max
    assert 30 < body["forked"] < 64, body
    assert healthz_ms(daemon) < 100


def test_memory_limit_covers_a_child_process(daemon: Daemon) -> None:
    t0 = time.monotonic()
    r = daemon.invoke("hungry", {"mb": 400}, headers=auth())
    assert time.monotonic() - t0 < 5  # at once, not after the child's 5 s sleep
    # The kernel stops the child at memory_mb: it dies, or the worker does with it (then the
    # invocation is Lambda's Runtime.OutOfMemory).
    if "X-Amz-Function-Error" in r.headers:
        assert r.json()["errorType"] == "Runtime.OutOfMemory"
        assert daemon.record(r.headers["x-amzn-RequestId"])["outcome"] == "oom"
    else:
        assert r.json()["child_returncode"] == -9, r


def test_a_root_daemon_turns_on_favordynmods(daemon: Daemon) -> None:
    """Cold starts depend on it: without it, each new worker's cgroup move waits out an RCU grace
    period (the README's cold-start table)."""
    found = dynmods_remount(Path("/proc/self/mountinfo").read_text())
    assert found is None or found[1] is None, found  # no cgroup2 at all, or set on it


def test_health_stays_fast_while_functions_attack(daemon: Daemon) -> None:
    done = threading.Event()

    def hammer() -> None:
        while not done.is_set():
            daemon.invoke("bomb", {"n": 100}, headers=auth())

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        times = []
        for _ in range(20):
            times.append(healthz_ms(daemon))
            time.sleep(0.05)
    finally:
        done.set()
        thread.join()
    assert sorted(times)[-2] < 100, times  # the 19th of 20: one scheduling hiccup allowed
    ready = daemon.request("GET", "/readyz")
    assert ready.status == 200
    assert ready.json() in ({"status": "ready", "sandbox": "bubblewrap", "memory_limits": f"cgroup v{v}"}
                            for v in (1, 2))


def test_without_bubblewrap_the_daemon_refuses_to_start_and_says_what_to_do(tmp_path: Path) -> None:
    # A PATH with the runtime on it and nothing else: no bwrap, no pasta.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / RUNTIME).symlink_to(sys.executable)
    (tmp_path / "code").mkdir()
    (tmp_path / "config.toml").write_text(function_toml("f", "app.handler", "code"))
    done = subprocess.run([sys.executable, "-m", "router", "serve", "--config",
                           str(tmp_path / "config.toml"), "--listen", "127.0.0.1:0"],
                          env={"PATH": str(bin_dir)}, capture_output=True, timeout=30)
    assert done.returncode == 2
    message = done.stderr.decode()
    assert "bwrap (package bubblewrap)" in message and "pasta (package passt)" in message
    assert 'mode = "none"' in message


def test_a_fork_server_that_lies_on_its_control_socket_is_stopped(daemon: Daemon) -> None:
    t0 = time.monotonic()
    r = daemon.invoke("liar", {}, headers=auth())
    assert r.headers.get("X-Amz-Function-Error") == "Unhandled", r
    assert time.monotonic() - t0 < 10
    daemon.wait_for_line("liar: the fork server sent a malformed message")
    # No traceback of the daemon's (the fork server's own, as function output "[liar] -", may come:
    # it dies at its next send on the closed socket).
    assert not any("Traceback" in line for line in daemon.lines if not untimed(line).startswith("[liar]"))
    assert healthz_ms(daemon) < 100
    assert daemon.invoke("victim", {}, headers=auth()).status == 200


def test_an_exit_the_fork_server_keeps_quiet_about_is_seen_all_the_same(daemon: Daemon) -> None:
    """The router watches each worker through a pidfd: a fork server that never reports an exit
    cannot wedge the function's slots (the invocation would otherwise wait for its 30 s timeout)."""
    for _ in range(3):
        t0 = time.monotonic()
        r = daemon.invoke("mute", {"exit": True}, headers=auth())
        assert r.headers.get("X-Amz-Function-Error") == "Unhandled", r
        assert r.json()["errorType"] == "Runtime.ExitError", r.json()
        assert time.monotonic() - t0 < 5
    assert daemon.invoke("mute", {}, headers=auth()).status == 200
    daemon.wait_for_line("its fork server did not say so")


def test_a_cgroup_kill_ends_every_process_in_it_and_nothing_else() -> None:
    tree, why = open_tree(os.getpid())
    assert tree is not None, why
    cgroup = tree.make("kill-test", 64, 16)
    inside = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    outside = subprocess.Popen(["sleep", "30"])
    try:
        for proc in inside:
            cgroup.add(proc.pid)
        cgroup.kill()
        assert [proc.wait(timeout=5) for proc in inside] == [-9, -9, -9]
        assert outside.poll() is None
    finally:
        outside.kill()
        outside.wait()
        cgroup.remove()
        tree.close()
    assert not any(folder.exists() for folder in cgroup.folders)


def test_a_daemon_removes_the_cgroups_a_killed_daemon_left() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    tree, why = open_tree(os.getpid())
    assert tree is not None, why
    leftovers = [base.parent / f"headwater-{gone.pid}" / "fn.1" for base in tree.bases.values()]
    tree.close()
    for folder in leftovers:
        folder.mkdir(parents=True)
    tree, _ = open_tree(os.getpid())
    assert tree is not None
    tree.close()
    assert not any(folder.parent.exists() for folder in leftovers)


def test_a_uid_still_running_processes_is_not_handed_to_a_new_function(tmp_path: Path) -> None:
    config = parse({"sandbox": {"uid_min": 300000, "uid_count": 4}}, tmp_path, {})
    isolation = Isolation(config, "/b")
    leftover = subprocess.Popen(["sleep", "30"], user=300000)  # a deleted function's, outliving it
    try:
        assert isolation._uid("new") == 300001
        isolation.release("new")
        leftover.kill()
        leftover.wait()
        assert isolation._uid("newer") == 300000
    finally:
        leftover.kill()
        leftover.wait()


def test_a_function_path_or_preload_never_reaches_what_builds_its_sandbox(
        make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    """bubblewrap and setpriv run before the sandbox holds (as root, for a root daemon): a PATH
    naming the function's own folder first, or an LD_PRELOAD, must not choose what they run."""
    trap = tmp_path / "trap"
    trap.mkdir()
    ran = tmp_path / "ran"
    for tool in ("bwrap", "setpriv", "python3"):
        (trap / tool).write_text(f"#!/bin/sh\necho {tool} >> {ran}\nexit 1\n")
        (trap / tool).chmod(0o755)
    trap.chmod(0o755)
    library = tmp_path / "preload.so"  # not a library: a loader that honoured it would complain
    library.write_text("not a shared object")
    env = f'{{ PATH = "{trap}:/var/task:/usr/bin:/bin", LD_PRELOAD = "{library}" }}'
    daemon = make_daemon(function_toml("lured", "outcomes.echo") + f"env = {env}\n")
    r = daemon.invoke("lured", {})
    assert r.status == 200, r.body
    seen = r.json()["env"]
    assert seen["PATH"].startswith(str(trap)) and seen["LD_PRELOAD"] == str(library)
    assert not ran.exists(), ran.read_text()
    assert not [line for line in daemon.lines if "preload" in line.lower()], daemon.lines
