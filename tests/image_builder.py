"""Container images built without docker, for the image tests and bench/images.py: a folder made
here becomes a layer (``umoci insert``), ``umoci config`` sets ENTRYPOINT/CMD/WORKDIR/ENV, and
skopeo copies the OCI layout to a registry or a ``docker save``-style tarball.

Two images, both built as AWS's base images are: an entry point that runs a runtime interface
client. ``shell``: dash and a copied curl, looping on the Runtime API like AWS's custom-runtime
tutorial. ``python``: the machine's Python (interpreter, the libraries it links, a trimmed
standard library) with awslambdaric from the test extra, started as
``python3 -m awslambdaric app.handler``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

from workers.runtimes.base import BASE_PYTHON
from workers.runtimes.image import ldd
from workers.runtimes.python import distribution_files

USER, PASSWORD = "puller", "s3cret-Pa55"  # the htpasswd registry's one account

# A shell bootstrap that needs nothing but the shell's builtins and curl.
SHELL_BOOTSTRAP = r"""#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  curl -sS -D /tmp/headers -o /tmp/event "$API/invocation/next"
  REQUEST_ID=
  while IFS=': ' read -r key value; do
    case "$key" in [Ll]ambda-[Rr]untime-[Aa]ws-[Rr]equest-[Ii]d) REQUEST_ID="${value%?}" ;; esac
  done < /tmp/headers
  read -r EVENT < /tmp/event
  echo "shell handling $REQUEST_ID"
  case "$EVENT" in
    *spin*) while :; do :; done ;;
    *exit*) exit 3 ;;
  esac
  HOST=no; [ -e /etc/shadow ] && HOST=yes
  BODY="{\"event\": $EVENT, \"handler\": \"$1\", \"cwd\": \"$(pwd)\", \"greeting\": \"$GREETING\","
  BODY="$BODY \"from_image\": \"$FROM_IMAGE\", \"marker\": \"$(cat /image-marker)\", \"shadow\": \"$HOST\"}"
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "$BODY"
done
"""

PYTHON_APP = """\
import os

def handler(event, context):
    probe = event.get("probe")
    if probe == "write":
        try:
            open("/var/task/written", "w").write("x")
            return {"wrote": True}
        except OSError as e:
            return {"wrote": False, "error": type(e).__name__}
    if probe == "host":
        seen = {}
        for path in ("/etc/shadow", "/root", "/work", "/var/lib/headwater", "/usr/bin/bwrap"):
            seen[path] = os.path.exists(path)
        return {"seen": seen, "root": sorted(os.listdir("/"))}
    return {"event": event, "request_id": context.aws_request_id, "cwd": os.getcwd(),
            "function_name": context.function_name, "tier": os.environ.get("TIER"),
            "from_image": os.environ.get("FROM_IMAGE")}

def other(event, context):
    return "other handler"
"""

# Standard-library folders awslambdaric never imports: left out to keep the layer small.
UNUSED = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages",
          "pydoc_data", "unittest", "distutils", "venv", "sqlite3", "curses", "dbm", "xmlrpc",
          "multiprocessing", "asyncio", "config-3.11-x86_64-linux-gnu"}


def run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def copy_libraries(programs: list[str], rootfs: Path) -> None:
    """The programs' shared libraries and loader, each at its own path in the rootfs."""
    loader, libraries = ldd(programs)
    for lib in [loader, *libraries]:
        target = rootfs / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, target)
    # The loader at the path every program names (PT_INTERP) when the machine's is elsewhere.
    interp = rootfs / "lib64" / Path(loader).name
    if not interp.exists():
        interp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(loader, interp)


def shell_rootfs(rootfs: Path) -> None:
    for program, at in ((shutil.which("dash") or "/bin/sh", "bin/sh"),
                        (shutil.which("curl") or "/usr/bin/curl", "usr/bin/curl"),
                        (shutil.which("cat") or "/bin/cat", "bin/cat")):
        (rootfs / at).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(program), rootfs / at)
    copy_libraries([os.path.realpath(shutil.which(p) or p) for p in ("dash", "curl", "cat")], rootfs)
    (rootfs / "image-marker").write_text("from the image\n")
    (rootfs / "var/task").mkdir(parents=True)
    (rootfs / "var/task/bootstrap").write_text(SHELL_BOOTSTRAP)
    (rootfs / "var/task/bootstrap").chmod(0o755)


def python_rootfs(rootfs: Path) -> None:
    """The interpreter at /var/lang (as AWS's Python base images have it), its libraries, the
    standard library it needs, and awslambdaric with its dependencies in /var/runtime."""
    prefix = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = prefix / "lib" / version
    lang = rootfs / "var/lang"
    (lang / "bin").mkdir(parents=True)
    shutil.copy2(BASE_PYTHON, lang / "bin" / version)
    os.symlink(version, lang / "bin/python3")
    modules = sorted(str(p) for p in (stdlib / "lib-dynload").glob("*.so")
                     if not p.name.startswith(("_test", "_tkinter", "_ctypes_test", "_curses")))
    copy_libraries([BASE_PYTHON, *modules], rootfs)
    # libpython where LD_LIBRARY_PATH (the image's ENV, as on AWS's images) finds it.
    (lang / "lib").mkdir(exist_ok=True)
    for lib in (prefix / "lib").glob("libpython*.so*"):
        shutil.copy2(lib, lang / "lib" / lib.name)
    ignore = shutil.ignore_patterns("*.opt-1.pyc", "*.opt-2.pyc", *UNUSED)
    shutil.copytree(stdlib, lang / "lib" / version, ignore=ignore, dirs_exist_ok=True)
    runtime = rootfs / "var/runtime"
    runtime.mkdir(parents=True)
    for path in distribution_files(("awslambdaric", "simplejson", "snapshot-restore-py")):
        copy = shutil.copytree if os.path.isdir(path) else shutil.copy2
        copy(path, runtime / os.path.basename(path))
    copy_libraries([str(p) for p in runtime.rglob("*.so")], rootfs)  # the client's C extension
    (rootfs / "var/task").mkdir(parents=True)
    (rootfs / "var/task/app.py").write_text(PYTHON_APP)


def build(kind: str, layout: Path, work: Path) -> str:
    """An OCI layout at ``layout`` with the image ``kind`` tagged "latest"; its ``oci:`` reference."""
    rootfs = work / f"{kind}-rootfs"
    rootfs.mkdir(parents=True)
    if kind == "shell":
        shell_rootfs(rootfs)
        config = ["--config.entrypoint", "/var/task/bootstrap", "--config.cmd", "function.handler",
                  "--config.workingdir", "/var/task", "--config.env", "FROM_IMAGE=shell",
                  "--config.env", "GREETING=from the image",
                  "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin"]
    else:
        python_rootfs(rootfs)
        config = ["--config.entrypoint", "python3", "--config.entrypoint", "-m",
                  "--config.entrypoint", "awslambdaric", "--config.cmd", "app.handler",
                  "--config.workingdir", "/var/task", "--config.env", "FROM_IMAGE=python",
                  "--config.env", "PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin",
                  "--config.env", "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64",
                  "--config.env", "PYTHONPATH=/var/runtime", "--config.env", "LAMBDA_TASK_ROOT=/var/task"]
    image = f"{layout}:latest"
    if not (layout / "index.json").exists():
        run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", image)
    run("umoci", "insert", "--rootless", "--no-history", "--image", image, str(rootfs), "/")
    run("umoci", "config", "--no-history", "--image", image, *config)
    shutil.rmtree(rootfs)
    return f"oci:{image}"


def push(oci: str, registry: str, repository: str, creds: str = "") -> str:
    """Copy an image to a registry on loopback (plain HTTP); its reference there."""
    ref = f"{registry}/{repository}"
    run("skopeo", "copy", "--quiet", "--dest-tls-verify=false",
        *(["--dest-creds", creds] if creds else []), oci, f"docker://{ref}")
    return ref


def save(oci: str, tarball: Path, name: str) -> str:
    """The image as ``docker save`` writes it; its ``docker-archive:`` reference."""
    run("skopeo", "copy", "--quiet", oci, f"docker-archive:{tarball}:{name}")
    return f"docker-archive:{tarball}"


def start_registry(folder: Path, auth: bool) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's docker-registry on a loopback port of its own, its storage in ``folder``; no
    debug or metrics listener (the config names none)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true",
             "storage:", "  filesystem:", f"    rootdirectory: {folder / 'storage'}",
             "http:", f"  addr: 127.0.0.1:{port}"]
    if auth:
        with warnings.catch_warnings():  # deprecated, and the one bcrypt the machine has
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        (folder / "htpasswd").write_text(f"{USER}:{hashed}\n")
        lines += ["auth:", "  htpasswd:", "    realm: headwater-tests", f"    path: {folder / 'htpasswd'}"]
    (folder / "config.yml").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                               f"http://127.0.0.1:{port}/v2/"], capture_output=True, text=True)
        if done.stdout in ("200", "401"):
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("docker-registry did not start")
