"""The daemon's side of isolating functions: which sandbox each gets, its uid, and the cgroups.

Opened once at start-up: a sandbox that cannot be had is a start-up error that names the package
and the opt-out, never a silent downgrade. Cgroups are the exception: where none can be made, the
memory limit falls back to polling resident memory, and start-up and ``/readyz`` say so.
"""

from __future__ import annotations

import logging
import os

from router.config import Config, FunctionConfig, loopback_port
from workers import cgroups
from workers.runtimes import Launcher
from workers.sandbox import TASK_ROOT, Network, Sandbox, missing_tools

log = logging.getLogger("headwater.sandbox")


class SandboxUnavailable(Exception):
    """The configured sandbox cannot be used on this machine; the message says what to do."""


def running_uids() -> set[int]:
    """The uids that processes on this machine run as (procfs shows each one's as its owner)."""
    uids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                uids.add(entry.stat().st_uid)
            except OSError:  # exited meanwhile
                pass
    return uids


class Isolation:
    def __init__(self, config: Config, bootstrap: str) -> None:
        self.config = config.sandbox
        self.aws_port = loopback_port(config.aws.endpoint_url) if config.aws.endpoint_url else None
        self.enabled = self.config.mode == "bubblewrap"
        self.bootstrap = bootstrap
        self.as_root = os.geteuid() == 0
        self._uids: dict[str, int] = {}
        self.tree: cgroups.Tree | None = None
        self.memory_limit = "none"

    def open(self, functions: list[FunctionConfig]) -> None:
        """Check that the sandbox can be built and set up the cgroups; raises
        ``SandboxUnavailable``."""
        if not self.enabled:
            log.warning('sandbox.mode = "none": functions run unsandboxed, as the daemon\'s user, '
                        "and can read its files and reach its network")
        else:
            missing = missing_tools()
            if missing:
                raise SandboxUnavailable(
                    f"the function sandbox needs {', '.join(missing)}: install it "
                    "(apt-get install bubblewrap passt), or set [sandbox] mode = \"none\" "
                    "(loopback listeners only)")
        for f in functions:
            if f.network == "host":
                log.warning("%s: network = \"host\": the function shares the daemon's network, "
                            "its loopback services included", f.name)
        self.tree, why = cgroups.open_tree(os.getpid())
        if self.tree is not None:
            self.memory_limit = why
            log.info("memory and process limits: %s (exact, per worker)", why)
            if self.config.favor_dynmods and self.as_root:
                log.info("%s (cgroup moves skip an RCU grace period; forks and exits machine-wide "
                         "cost slightly more)", cgroups.favor_dynmods())
        else:
            self.memory_limit = "rss-poll"
            log.warning("memory limits: resident memory polled every 20 ms (no cgroup: %s)", why)

    def sandbox(self, fn: FunctionConfig, launcher: Launcher, opt: str = "", root: str = "",
                cwd: str = TASK_ROOT, setpriv: tuple[str, ...] = ("setpriv",)) -> Sandbox | None:
        """The function's sandbox; ``opt`` its merged layers, ``root`` an image's rootfs, ``cwd``
        its WORKDIR and ``setpriv`` how the host's setpriv runs there."""
        if not self.enabled:
            return None
        ports = {int(endpoint.rpartition(":")[2]) for endpoint in fn.allow}
        # The AWS endpoint the function is given (AWS_ENDPOINT_URL) is granted with it, as a
        # Lambda function reaches the services its role allows.
        if (aws := self.aws_port) is not None:
            ports.add(aws)
        return Sandbox(uid=self._uid(fn.name) if self.as_root else None, code=fn.code,
                       bootstrap=self.bootstrap, runtime=launcher.folders, files=launcher.files,
                       tmp_mb=fn.ephemeral_storage_mb, network=Network(fn.network, tuple(sorted(ports))),
                       opt=opt, root=root, cwd=cwd, setpriv=setpriv)

    def _uid(self, name: str) -> int:
        """A uid of the function's own, kept while it is deployed."""
        uid = self._uids.get(name)
        if uid is None:
            # A deleted function's uid is free again only once none of its processes is left (a
            # worker that outlived its kill): the next function must not be able to signal it.
            taken = set(self._uids.values()) | running_uids()
            free = (u for u in range(self.config.uid_min, self.config.uid_min + self.config.uid_count)
                    if u not in taken)
            uid = next(free, None)
            if uid is None:
                raise SandboxUnavailable(f"sandbox.uid_count: all {self.config.uid_count} uids "
                                         "are in use")
            self._uids[name] = uid
        return uid

    def release(self, name: str) -> None:
        self._uids.pop(name, None)

    def close(self) -> None:
        if self.tree is not None:
            self.tree.close()
