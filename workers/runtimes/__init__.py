"""The runtimes a function can name, one module each, and the one way to find them.

A module gives ``PATTERN`` (the runtime names it serves) and ``probe(runtime, path)``, which finds
the runtime on this machine and answers with a ``Launcher``: how the function's fork server and
workers start, what the sandbox must bind, and whether workers speak the bootstrap's frames
(Python, forked warm) or the Lambda Runtime API (everything else, exec'd). Adding a runtime is
adding a module and listing it in ``MODULES``.
"""

from __future__ import annotations

import re
from functools import cache

from workers.runtimes import nodejs, provided, python
from workers.runtimes.base import BadRuntime, Launcher

MODULES = (python, nodejs, provided)
PATTERN = "|".join(f"(?:{module.PATTERN})" for module in MODULES)
EXAMPLES = '"python3.11", "nodejs20.x", "provided.al2023"'

__all__ = ["EXAMPLES", "PATTERN", "BadRuntime", "Launcher", "probe"]


@cache
def probe(runtime: str, path: str | None = None) -> Launcher:
    """The runtime named ``runtime``, as found on ``path``; raises ``BadRuntime``."""
    for module in MODULES:
        if re.fullmatch(module.PATTERN, runtime):
            return module.probe(runtime, path)
    raise BadRuntime(f"{runtime!r} is not a runtime Headwater knows ({EXAMPLES}, …)")
