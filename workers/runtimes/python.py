"""``python3.N``: which interpreter it is, found by running it once. Its workers are forked from a
fork server that imported the function's module, and speak the bootstrap's frames.

A lookup on PATH is not enough: a version manager's shim (pyenv's) or a broken link passes it, and
then every worker fails to start. Running the interpreter answers with its real executable and the
folders it needs, which the sandbox binds read-only at the same paths (a virtualenv's
``pyvenv.cfg`` names its base by absolute path, so the paths cannot move).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from workers.runtimes.base import BadRuntime, Launcher

PATTERN = r"python3\.\d+"

_PROBE = ("import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.base_prefix, "
          "'%d.%d' % sys.version_info[:2]]))")


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
        executable, prefix, base, version = json.loads(done.stdout)
    except ValueError:
        detail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
            f"exit status {done.returncode}"]
        raise BadRuntime(f"{json.dumps(runtime)} ({found}) does not run: "
                         f"{' '.join(detail[0].split())}") from None
    if f"python{version}" != runtime:
        raise BadRuntime(f"{json.dumps(runtime)} ({found}) is Python {version}")
    return Launcher(runtime, executable, tuple(dict.fromkeys((base, prefix))),
                    path=(os.path.dirname(executable),))
