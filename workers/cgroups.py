"""Exact memory and process limits for each worker, through the kernel's control groups.

Every worker (and each function's fork server) gets a cgroup of its own in the memory and pids
controllers: the kernel then holds the worker and everything it starts to ``memory_mb`` and to a
number of processes, at the moment of allocation, instead of a poll noticing 20 ms late. Version 2
is used where the daemon's own cgroup can delegate both controllers (systemd's ``Delegate=yes``),
version 1 where that is what the machine mounts. Where neither can be written, ``open_tree``
returns None and the pool falls back to polling resident memory.

The cgroups live beside (v2) or below (v1) the daemon's own, named for the daemon's pid, so several
daemons on one machine never share one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("headwater.cgroups")

CONTROLLERS = ("memory", "pids")


def locate(proc_cgroup: str, mountinfo: str) -> tuple[int, dict[str, Path]] | None:
    """Where this process's memory and pids cgroups are: ``(version, {controller: folder})``.

    Pure: given the text of /proc/self/cgroup and /proc/self/mountinfo. Version 1 is chosen when
    both controllers are mounted as v1 hierarchies (the v2 tree then lacks them).
    """
    own_v1: dict[str, str] = {}
    own_v2 = None
    for line in proc_cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and not names:
            own_v2 = path
        for name in names.split(","):
            own_v1[name] = path
    mounts_v1: dict[str, str] = {}
    mount_v2 = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3] if len(fields) > dash + 3 else ""
        if fstype == "cgroup":
            for name in options.split(","):
                if name in CONTROLLERS:
                    mounts_v1[name] = fields[4]
        elif fstype == "cgroup2":
            mount_v2 = fields[4]
    if all(c in mounts_v1 and c in own_v1 for c in CONTROLLERS):
        return 1, {c: Path(mounts_v1[c] + own_v1[c].rstrip("/")) for c in CONTROLLERS}
    if mount_v2 is not None and own_v2 is not None:
        folder = Path(mount_v2 + own_v2.rstrip("/"))
        return 2, dict.fromkeys(CONTROLLERS, folder)
    return None


def dynmods_remount(mountinfo: str) -> tuple[str, str | None] | None:
    """The cgroup2 mount point and the ``mount -o`` options that keep its flags and add
    ``favordynmods`` (None: it has it already); None when there is no cgroup2 mount.

    Pure: given the text of /proc/self/mountinfo. The option is the kernel's (Linux 6.0+): with it,
    moving a process between cgroups no longer waits for an RCU grace period (6–20 ms on a quiet
    machine), at the price of slightly dearer forks and exits. The lock it concerns is one for the
    whole machine, so one hierarchy having it is enough for every controller, v1 ones included.
    """
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if fields[dash + 1] != "cgroup2" or len(fields) < dash + 4:
            continue
        per_mount, per_super = fields[5].split(","), fields[dash + 3].split(",")
        if "favordynmods" in per_super:
            return fields[4], None
        # A remount sets every flag anew: leaving one out (nosuid, nsdelegate, …) would clear it.
        return fields[4], ",".join(dict.fromkeys(["remount", *per_mount, *per_super, "favordynmods"]))
    return None


def favor_dynmods() -> str:
    """Turn ``favordynmods`` on for the machine (needs root); says what it found or did."""
    try:
        found = dynmods_remount(Path("/proc/self/mountinfo").read_text())
    except OSError as e:
        return f"cannot read /proc/self/mountinfo: {e.strerror}"
    if found is None:
        return "favordynmods: no cgroup2 hierarchy to set it on"
    point, options = found
    if options is None:
        return f"favordynmods: already set on {point}"
    done = subprocess.run(["mount", "-o", options, "cgroup2", point], capture_output=True, text=True)
    if done.returncode != 0:
        return f"favordynmods: cannot remount {point}: {done.stderr.strip() or done.returncode}"
    return f"favordynmods: set on {point}"


class Cgroup:
    """One worker's (or fork server's) cgroup, in each controller's hierarchy."""

    def __init__(self, tree: Tree, folders: tuple[Path, ...]) -> None:
        self.tree = tree
        self.folders = folders
        self._peak_fd = -1

    def add(self, pid: int) -> None:
        for folder in self.folders:
            (folder / "cgroup.procs").write_text(str(pid))

    def oom_kills(self) -> int:
        """How many processes the kernel killed here for want of memory."""
        name = "memory.oom_control" if self.tree.version == 1 else "memory.events"
        try:
            text = (self.folders[0] / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def peak_mb(self) -> int:
        """The most memory its processes have held together, in MB."""
        # Read after every invocation of a Runtime API worker: opened once, then one pread.
        try:
            if self._peak_fd < 0:
                name = "memory.max_usage_in_bytes" if self.tree.version == 1 else "memory.peak"
                self._peak_fd = os.open(self.folders[0] / name, os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._peak_fd, 32, 0)) >> 20
        except (OSError, ValueError):
            return 0

    def kill(self) -> None:
        """SIGKILL every process in it, by pidfds, so that a pid reused meanwhile is spared."""
        if self.tree.version == 2:
            with contextlib.suppress(OSError):  # Linux 5.14+: the kernel does it, races and all
                (self.folders[0] / "cgroup.kill").write_text("1")
                return
        for _ in range(3):  # what was forked while the first pass read the list
            pidfds = []
            for pid in self._pids():
                with contextlib.suppress(OSError):
                    pidfds.append((pid, os.pidfd_open(pid)))
            # A pid still listed now is the process its pidfd holds, or a newer one made inside
            # this cgroup (by one of its own): either way it belongs here.
            listed = set(self._pids())
            for pid, pidfd in pidfds:
                if pid in listed:
                    with contextlib.suppress(OSError):
                        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
            if not pidfds:
                return

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.folders[0] / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self) -> None:
        """Delete it once its processes are gone; one not yet empty is retried by ``sweep``."""
        if self._peak_fd >= 0:
            os.close(self._peak_fd)
            self._peak_fd = -1
        self.tree.leftover.update(self.folders)
        self.tree.sweep()


class Tree:
    """This daemon's cgroups: made, limited and removed by name."""

    def __init__(self, version: int, bases: dict[str, Path], prefix: str = "") -> None:
        self.version = version
        self.bases = bases
        self.prefix = prefix  # v2's cgroups sit beside other services' in the daemon's own
        self.leftover: set[Path] = set()
        self._serial = 0
        self._naming = threading.Lock()  # workers are put in their cgroups from threads

    @property
    def description(self) -> str:
        return f"cgroup v{self.version}"

    def make(self, label: str, memory_mb: int, pids: int) -> Cgroup:
        """A new cgroup limited to ``memory_mb`` (no swap beyond it) and ``pids`` tasks."""
        with self._naming:
            while True:  # a name left by an earlier daemon of the same pid is skipped
                self._serial += 1
                name = f"{self.prefix}{label}.{self._serial}"
                folders = tuple(dict.fromkeys(base / name for base in self.bases.values()))
                if not any(folder.exists() for folder in folders):
                    break
            for folder in folders:
                folder.mkdir()
        limit = str(memory_mb * 1024 * 1024)
        memory, tasks = folders[0], folders[-1]
        if self.version == 1:
            (memory / "memory.limit_in_bytes").write_text(limit)
            with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to bound
                (memory / "memory.memsw.limit_in_bytes").write_text(limit)
        else:
            (memory / "memory.max").write_text(limit)
            with contextlib.suppress(FileNotFoundError):
                (memory / "memory.swap.max").write_text("0")
        (tasks / "pids.max").write_text(str(pids))
        return Cgroup(self, folders)

    def sweep(self) -> None:
        """Remove the cgroups whose last process has since been reaped."""
        for folder in list(self.leftover):
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                continue
            self.leftover.discard(folder)

    def close(self) -> None:
        self.sweep()
        for base in set(self.bases.values()):
            if self.version == 1:
                with contextlib.suppress(OSError):
                    base.rmdir()


STALE = re.compile(r"^headwater-(\d+)(?:$|[-.])")


def stale(names: list[str], alive: Callable[[int], bool]) -> list[str]:
    """Which of a cgroup folder's entries are cgroups of daemons no longer running (killed before
    they could remove them). Pure: ``alive`` says whether a pid runs."""
    found = []
    for name in names:
        match = STALE.match(name)
        if match and not alive(int(match.group(1))):
            found.append(name)
    return found


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _remove_stale(folder: Path) -> None:
    """Remove dead daemons' cgroups below ``folder``, deepest first; one with processes stays."""
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_dir()]
    except OSError:
        return
    for name in stale(names, _alive):
        top = folder / name
        for root, dirs, _ in os.walk(top, topdown=False):
            for d in dirs:
                with contextlib.suppress(OSError):
                    (Path(root) / d).rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def open_tree(daemon_pid: int) -> tuple[Tree | None, str]:
    """This daemon's cgroup tree, or None and the reason none can be had."""
    try:
        found = locate(Path("/proc/self/cgroup").read_text(), Path("/proc/self/mountinfo").read_text())
    except OSError as e:
        return None, f"cannot read /proc: {e.strerror}"
    if found is None:
        return None, "no memory and pids cgroup controllers are mounted"
    version, own = found
    for folder in set(own.values()):
        _remove_stale(folder)
    try:
        if version == 1:
            bases = {c: own[c] / f"headwater-{daemon_pid}" for c in CONTROLLERS}
            for base in bases.values():
                base.mkdir(exist_ok=True)
            tree = Tree(1, bases)
        else:
            own_v2 = _delegate_v2(own["memory"], daemon_pid)
            tree = Tree(2, dict.fromkeys(CONTROLLERS, own_v2), f"headwater-{daemon_pid}-")
        tree.make("probe", 128, 16).remove()  # fails here, not at the first worker
    except OSError as e:
        return None, f"cannot create cgroups under {own['memory']}: {e.strerror}"
    return tree, tree.description


def _delegate_v2(own: Path, daemon_pid: int) -> Path:
    """Enable memory and pids for cgroups below the daemon's own. A v2 cgroup with processes may
    not also have controllers for its children, so the daemon first moves into a leaf of its
    own (what systemd asks of a service with ``Delegate=yes``)."""
    enabled = (own / "cgroup.subtree_control").read_text().split()
    if not all(c in enabled for c in CONTROLLERS):
        available = (own / "cgroup.controllers").read_text().split()
        missing = [c for c in CONTROLLERS if c not in available]
        if missing:
            raise OSError(0, f"the {' and '.join(missing)} controller is not delegated")
        leaf = own / f"headwater-{daemon_pid}.daemon"
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (own / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in CONTROLLERS))
    return own
