"""Tables for the sandbox's pure parts: bubblewrap's and pasta's command lines, where the cgroups
are, and when pasta has configured a namespace."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from workers.cgroups import dynmods_remount, locate, stale
from workers.sandbox import Network, Sandbox, argv, has_default_route, pasta_argv

ROOT_SANDBOX = Sandbox(uid=200001, code="/srv/fn", bootstrap="/opt/hw/workers/bootstrap.py",
                       runtime=("/root/.pyenv/versions/3.11.7",), tmp_mb=512,
                       network=Network("default", (4566,)))


def pairs(args: list[str], flag: str) -> list[tuple[str, ...]]:
    """Each occurrence of ``flag`` with the arguments that follow it."""
    width = {"--ro-bind": 2, "--symlink": 2, "--dir": 1, "--perms": 1, "--tmpfs": 1}.get(flag, 1)
    return [tuple(args[i + 1:i + 1 + width]) for i, a in enumerate(args) if a == flag]


def test_a_root_daemon_drops_to_the_functions_uid_after_bubblewrap() -> None:
    args = argv(ROOT_SANDBOX, ["python3", "bootstrap.py"], 7, 8)
    command = args[args.index("--") + 1:]
    assert command[:2] == ["setpriv", "--reuid=200001"]
    assert "--bounding-set=-all" in command and "--no-new-privs" in command
    assert command[-2:] == ["python3", "bootstrap.py"]
    assert "--unshare-user" not in args  # root's user namespace would map back to root
    assert ("CAP_SETUID",) in pairs(args, "--cap-add")


def test_without_root_a_user_namespace_and_no_setpriv() -> None:
    sandbox = Sandbox(None, "/srv/fn", "/b/bootstrap.py", (), 512, Network("none"))
    args = argv(sandbox, ["x"], 7, 8)
    assert "--unshare-user" in args and "--disable-userns" in args
    assert "setpriv" not in args
    assert "--cap-add" not in args


@pytest.mark.parametrize(("mode", "unshared"), [("default", True), ("none", True), ("host", False)])
def test_the_network_namespace_follows_the_mode(mode: str, unshared: bool) -> None:
    sandbox = Sandbox(1, "/c", "/b/bootstrap.py", (), 512, Network(mode))
    assert ("--unshare-net" in argv(sandbox, ["x"], 7, None)) is unshared


def test_binds_are_read_only_and_parents_reachable() -> None:
    args = argv(ROOT_SANDBOX, ["x"], 7, 8)
    binds = pairs(args, "--ro-bind")
    assert ("/srv/fn", "/var/task") in binds
    assert ("/opt/hw/workers/bootstrap.py", "/var/runtime/bootstrap.py") in binds
    assert ("/root/.pyenv/versions/3.11.7", "/root/.pyenv/versions/3.11.7") in binds
    assert "--bind" not in args  # nothing of the host is writable
    dirs = pairs(args, "--dir")
    for parent in ("/root", "/root/.pyenv", "/root/.pyenv/versions", "/var", "/var/runtime"):
        assert (parent,) in dirs
        assert args[args.index(parent) - 2:args.index(parent)] == ["0755", "--dir"]
    assert args[args.index("/tmp") - 4:args.index("/tmp")] == [
        "1777", "--size", str(512 * 1024 * 1024), "--tmpfs"]
    assert not any(b[0].startswith(("/etc/shadow", "/etc/passwd", "/var/lib")) for b in binds)


def test_a_runtime_under_tmp_is_bound_over_the_sandboxs_own_tmp() -> None:
    sandbox = Sandbox(1, "/c", "/b/bootstrap.py", ("/usr", "/tmp/venv"), 512, Network("none"))
    args = argv(sandbox, ["x"], 7, 8)
    assert args.index("--tmpfs") < args.index("/tmp/venv")
    assert ("/tmp",) not in pairs(args, "--dir")  # /tmp keeps its 1777


def test_etc_and_merged_usr_come_from_the_given_root(tmp_path: Path) -> None:
    (tmp_path / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "bin").symlink_to("usr/bin")
    (tmp_path / "lib").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "resolv.conf").write_text("")
    args = argv(ROOT_SANDBOX, ["x"], 7, 8, root=str(tmp_path))
    assert ("usr/bin", "/bin") in pairs(args, "--symlink")
    assert ("/lib", "/lib") in pairs(args, "--ro-bind")
    assert ("/etc/resolv.conf", "/etc/resolv.conf") in pairs(args, "--ro-bind")
    assert ("/etc/hosts", "/etc/hosts") not in pairs(args, "--ro-bind")


@pytest.mark.parametrize(("ports", "spec"), [((), "none"), ((4566,), "4566"), ((80, 9001), "80,9001")])
def test_pasta_forwards_only_the_granted_ports_outwards(ports: tuple[int, ...], spec: str) -> None:
    sandbox = Sandbox(1, "/c", "/b", (), 512, Network("default", ports))
    args = pasta_argv(sandbox, 5, None)
    assert args[:3] == ["setpriv", "--pdeathsig", "SIGKILL"]
    assert args[args.index("-T") + 1] == spec
    for flag in ("-t", "-u", "-U"):
        assert args[args.index(flag) + 1] == "none"
    assert "--no-map-gw" in args and "--foreground" in args
    assert args[args.index("--netns") + 1] == "/proc/self/fd/5"
    assert "--runas" in args
    unprivileged = msgspec.structs.replace(sandbox, uid=None)
    assert pasta_argv(unprivileged, 5, 6)[-2:] == ["--userns", "/proc/self/fd/6"]


V1_CGROUP = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n"
V1_MOUNTS = ("31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
             "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
             "39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
             "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")
V2_CGROUP = "0::/system.slice/headwater.service\n"
V2_MOUNTS = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(("cgroup", "mounts", "expected"), [
    (V1_CGROUP, V1_MOUNTS, (1, {"memory": Path("/sys/fs/cgroup/memory/process_api/abc"),
                                "pids": Path("/sys/fs/cgroup/pids")})),
    (V2_CGROUP, V2_MOUNTS, (2, {"memory": Path("/sys/fs/cgroup/system.slice/headwater.service"),
                                "pids": Path("/sys/fs/cgroup/system.slice/headwater.service")})),
    ("", "", None),
    ("4:memory:/x\n", V1_MOUNTS, None),  # no pids hierarchy of ours, and no v2 one
])
def test_locate_finds_the_daemons_own_cgroups(cgroup: str, mounts: str, expected: object) -> None:
    assert locate(cgroup, mounts) == expected


@pytest.mark.parametrize(("table", "ready"), [
    ("Iface\tDestination\tGateway\nlo\t0000007F\t00000000\n", False),
    ("Iface\tDestination\tGateway\neth0\t00000000\t010200C0\n", True),
    ("Iface\tDestination\tGateway\n", False),
])
def test_pasta_is_ready_once_the_namespace_has_a_default_route(table: str, ready: bool) -> None:
    assert has_default_route(table) is ready


@pytest.mark.parametrize(("mounts", "expected"), [
    (V1_MOUNTS, ("/sys/fs/cgroup/unified", "remount,rw,relatime,favordynmods")),
    (V2_MOUNTS, ("/sys/fs/cgroup", "remount,rw,nosuid,nsdelegate,favordynmods")),
    ("30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 "
     "rw,nsdelegate,memory_recursiveprot\n",
     ("/sys/fs/cgroup", "remount,rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot,"
                        "favordynmods")),
    ("30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,favordynmods\n", ("/sys/fs/cgroup", None)),
    (V1_MOUNTS.replace("cgroup2 cgroup2", "tmpfs tmpfs"), None),
])
def test_favordynmods_remount_keeps_every_flag(mounts: str, expected: object) -> None:
    assert dynmods_remount(mounts) == expected


def test_stale_cgroups_are_those_of_daemons_no_longer_running() -> None:
    names = ["headwater-10", "headwater-11", "headwater-12-fn.3", "headwater-12.daemon",
             "headwater-13-fn.1", "headwater-1x", "headwaterish-12", "system.slice", "headwater-"]
    assert stale(names, lambda pid: pid in (11, 13)) == [
        "headwater-10", "headwater-12-fn.3", "headwater-12.daemon"]
