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


def probe(runtime: str, path: str | None = None) -> Launcher:
    found = shutil.which("node", path=path)
    if found is None:
        raise BadRuntime(f"{json.dumps(runtime)}: node was not found on PATH")
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadRuntime(f"{json.dumps(runtime)}: {found} does not run: {e}") from None
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
