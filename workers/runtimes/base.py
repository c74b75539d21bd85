"""What every runtime module gives: ``Launcher``, how a function's workers start on this machine."""

from __future__ import annotations

import sys

import msgspec

# The interpreter the daemon runs on, without its virtualenv: the fork servers of the runtimes
# that do not run Python code of the function's run under it (with -S, seeing no site-packages),
# so nothing of the daemon's installation is bound into their sandbox.
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)
BASE_FOLDERS = (sys.base_prefix,)


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
    # Host files and folders of the runtime's own (its client, its packages), bound by name in
    # /var/runtime, which is LAMBDA_RUNTIME_DIR (an image's sandbox: under HOST_DIR, by path).
    files: tuple[str, ...] = ()
    # Where the runtime looks into a function's layers, as Lambda's does: each variable with the
    # folders under /opt it lists, searched after any the variable had (PATH and LD_LIBRARY_PATH,
    # /opt/bin and /opt/lib, are every runtime's).
    layer_paths: dict[str, tuple[str, ...]] = {}
    # What runs ``executable`` in front of it: an image's sandbox starts the daemon's Python
    # through the host's dynamic loader (see workers.runtimes.image).
    loader: tuple[str, ...] = ()
