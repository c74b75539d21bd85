"""``nodejsNN.x``: the machine's Node.js, if its major version is NN. Each worker is a fresh
``node`` running Headwater's runtime client (``nodejs_client.mjs``), which loads the handler and
speaks the Lambda Runtime API; Node cannot fork a warm process, so its fork server only forks and
execs, running the interpreter the daemon runs on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from workers.runtimes.base import BASE_FOLDERS, BASE_PYTHON, BadRuntime, Launcher

PATTERN = r"nodejs\d+\.x"
CLIENT = str(Path(__file__).with_name("nodejs_client.mjs"))


def node_version(path: str | None) -> tuple[str, str]:
    """The node on ``path`` and its ``--version`` ("v20.20.2"); raises ``BadRuntime``."""
    found = shutil.which("node", path=path)
    if found is None:
        raise BadRuntime("node was not found on PATH")
    try:
        return found, subprocess.run([found, "--version"], capture_output=True, text=True,
                                     timeout=10, stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadRuntime(f"{found} does not run: {e}") from None


def installed(path: str | None = None) -> str | None:
    """The runtime name of the node on ``path`` ("nodejs20.x"), if there is one that runs."""
    try:
        major = re.match(r"v(\d+)\.", node_version(path)[1])
    except BadRuntime:
        return None
    return f"nodejs{major[1]}.x" if major else None


def probe(runtime: str, path: str | None = None) -> Launcher:
    try:
        found, version = node_version(path)
    except BadRuntime as e:
        raise BadRuntime(f"{json.dumps(runtime)}: {e}") from None
    wanted = re.fullmatch(r"nodejs(\d+)\.x", runtime)
    assert wanted is not None
    if not version.startswith(f"v{wanted[1]}."):
        raise BadRuntime(f"{json.dumps(runtime)}: the node on PATH ({found}) is {version or 'unknown'}")
    node = str(Path(found).resolve())
    folders = list(BASE_FOLDERS)
    if not node.startswith("/usr/"):  # a Node installed elsewhere (nvm, /opt): bound as it is
        folders.append(str(Path(node).parent.parent))
    # require() looks in NODE_PATH's folders after the code's node_modules, as on Lambda; ES
    # modules' import does not (Node ignores NODE_PATH for them).
    layers = (f"nodejs/node{wanted[1]}/node_modules", "nodejs/node_modules")
    return Launcher(runtime, BASE_PYTHON, tuple(dict.fromkeys(folders)),
                    path=(str(Path(node).parent),), worker=(node, "{runtime}/nodejs_client.mjs"),
                    files=(CLIENT,), layer_paths={"NODE_PATH": layers})
