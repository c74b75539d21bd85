"""What every runtime module gives: ``Launcher``, how a function's workers start on this machine."""

from __future__ import annotations

import msgspec


class BadRuntime(Exception):
    """The runtime cannot run; the message says why, in one line."""


class Launcher(msgspec.Struct, frozen=True):
    """A runtime as found on this machine, and how its workers start."""

    runtime: str  # the name the function gives ("python3.11", "provided.al2023", …)
    executable: str  # the Python that runs the fork server (for python3.N, the function's own)
    folders: tuple[str, ...]  # host folders the sandbox binds read-only at their own paths
    path: tuple[str, ...] = ()  # folders the worker's PATH has ahead of the system's
    # What each worker execs, "{task}" standing for the code's folder and "{runtime}" for the folder
    # of ``files``; () for the Python bootstrap, which is forked from its fork server. A worker
    # that execs a command speaks the Lambda Runtime API.
    worker: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # host files of ours the worker runs, bound in /var/runtime
