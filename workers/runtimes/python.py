"""``python3.N``: which interpreter it is, found by running it once. Its workers are forked from a
fork server that imported the function's module, and speak the bootstrap's frames.

A lookup on PATH is not enough: a version manager's shim (pyenv's) or a broken link passes it, and
then every worker fails to start. Running the interpreter answers with its real executable and the
folder it needs, which the sandbox binds read-only at the same path. A virtualenv's Python is run as
its base interpreter, with ``-S``: a function sees the standard library and none of the packages
installed beside it (for the daemon's own interpreter, the daemon's).

What it does see is what Lambda's Python runtime has: boto3 and what boto3 needs, bound in
``/var/runtime`` (``LAMBDA_RUNTIME_DIR``), after the code and its ``PYTHONPATH`` on ``sys.path``, so
a package that brings its own boto3 gets its own. They are the packages of the daemon's
installation, which depends on boto3 for this; their compiled files serve the functions that run on
the daemon's Python version, others compile them when their fork server imports them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
from functools import cache

from workers.runtimes.base import BadRuntime, Launcher

PATTERN = r"python3\.\d+"

_PROBE = ("import json, sys; print(json.dumps([getattr(sys, '_base_executable', sys.executable), "
          "sys.base_prefix, '%d.%d' % sys.version_info[:2]]))")

# boto3 and what it needs, as Lambda's Python runtime ships them.
PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "urllib3", "six")


def distribution_files(names: tuple[str, ...]) -> tuple[str, ...]:
    """The host paths of the installed distributions' modules and metadata (what
    ``pip install --target`` would put in a folder for them).

    A distribution that is not installed is left out (the import then fails in the function, as
    it names). A top-level ``__pycache__`` is left out too: it holds other packages' files."""
    found: dict[str, None] = {}
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for file in dist.files or ():
            top = file.parts[0]
            if top not in ("..", "__pycache__"):
                found[str(dist.locate_file(top))] = None
    return tuple(found)


@cache
def packages() -> tuple[str, ...]:
    """``PACKAGES`` as this installation has them, each bound by name in /var/runtime."""
    return distribution_files(PACKAGES)


def probe(runtime: str, path: str | None = None) -> Launcher:
    """Run ``runtime`` (e.g. ``python3.11``, looked up on ``path``) once and describe it."""
    found = shutil.which(runtime, path=path)
    if found is None:
        raise BadRuntime(f"{json.dumps(runtime)} was not found on PATH")
    try:
        done = subprocess.run([found, "-I", "-c", _PROBE], capture_output=True, timeout=10,
                              stdin=subprocess.DEVNULL, env={"PATH": path or os.defpath})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadRuntime(f"{json.dumps(runtime)} ({found}) does not run: {e}") from None
    try:
        executable, base, version = json.loads(done.stdout)
    except ValueError:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"exit status {done.returncode}"]
        raise BadRuntime(f"{json.dumps(runtime)} ({found}) does not run: "
                         f"{' '.join(detail[0].split())}") from None
    if f"python{version}" != runtime:
        raise BadRuntime(f"{json.dumps(runtime)} ({found}) is Python {version}")
    # The bootstrap puts PYTHONPATH after the code and before the runtime's boto3 on sys.path:
    # where Lambda's Python has a layer's packages.
    layers = (f"python/lib/python{version}/site-packages", "python")
    return Launcher(runtime, executable, (base,), path=(os.path.dirname(executable),),
                    files=packages(), layer_paths={"PYTHONPATH": layers})
