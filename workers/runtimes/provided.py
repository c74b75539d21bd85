"""``provided``, ``provided.al2``, ``provided.al2023``: the function brings its own runtime, an
executable ``bootstrap`` in its package (or, if it has none there, in a layer, at
``/opt/bootstrap``) that speaks the Lambda Runtime API (a shell loop around curl, or a runtime
interface client such as awslambdaric). Each worker execs it afresh; its fork server only forks
and execs, so it runs the interpreter the daemon runs on, which imports nothing of the function.
"""

from __future__ import annotations

from workers.runtimes.base import BASE_FOLDERS, BASE_PYTHON, Launcher

PATTERN = r"provided(\.al2|\.al2023)?"


def probe(runtime: str, path: str | None = None) -> Launcher:
    return Launcher(runtime, BASE_PYTHON, BASE_FOLDERS,
                    worker=("{task}/bootstrap",))
