"""Container images (``PackageType = "Image"``): the worker is the image's ENTRYPOINT + CMD,
which speaks the Lambda Runtime API (AWS's base images run a runtime interface client), in a
sandbox whose root is the image's rootfs.

The function's fork server still runs the daemon's Python, which the image does not have and whose
C library may not match the image's: the interpreter, its standard library and the host libraries
it loads are bound under ``/.headwater`` (``workers.sandbox.HOST_DIR``), and the fork server is
started through the host's own dynamic loader with ``--library-path``, which neither the image's
libraries nor its ``LD_LIBRARY_PATH`` can change. The workers it execs are the image's programs,
with the image's loader and libraries.

Not chosen by a ``runtime`` name, so not in ``MODULES``: an image function's launcher is built from
its image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

from workers.runtimes.base import BASE_FOLDERS, BASE_PYTHON, BadRuntime, Launcher
from workers.sandbox import HOST_DIR

# What the fork server imports (the bootstrap's modules, and ctypes for PR_SET_CHILD_SUBREAPER):
# their extension modules' libraries must be bound for it.
_LOADED = ("import sys, json, decimal, fcntl, importlib, logging, resource, select, signal, socket, "
           "struct, termios, traceback, ctypes; print(json.dumps(sorted({m.__file__ for m in "
           "list(sys.modules.values()) if getattr(m, '__file__', None) and "
           "m.__file__.endswith('.so')})))")


def ldd(paths: list[str]) -> tuple[str, list[str]]:
    """The dynamic loader and the shared libraries ``paths`` need, as this machine resolves them."""
    done = subprocess.run(["ldd", *paths], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    loader, libraries = "", []
    for line in done.stdout.splitlines():
        fields = line.split()
        if "=>" in fields and len(fields) > fields.index("=>") + 1:
            target = fields[fields.index("=>") + 1]
            if target.startswith("/"):  # by the name the loader looks for, in its real folder
                libraries.append(os.path.join(os.path.realpath(os.path.dirname(target)),
                                              os.path.basename(target)))
        elif fields and fields[0].startswith("/") and "ld-linux" in fields[0]:
            loader = os.path.realpath(fields[0])
    if not loader:
        raise BadRuntime(f"cannot find the dynamic loader of {BASE_PYTHON} (ldd: {done.stderr.strip()})")
    return loader, sorted(set(libraries))


@cache
def host_files() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What an image's sandbox needs of the host to start the fork server: the loader's argv
    prefix (paths inside the sandbox), and the folders and files bound under HOST_DIR (the
    daemon's interpreter, and setpriv, which drops a root daemon's sandbox to the function's
    uid, with the libraries both load)."""
    done = subprocess.run([BASE_PYTHON, "-I", "-S", "-c", _LOADED], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, env={"PATH": os.defpath})
    try:
        modules = json.loads(done.stdout)
    except ValueError:
        raise BadRuntime(f"{BASE_PYTHON} does not run: {done.stderr.strip()[-200:]}") from None
    setpriv = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")
    loader, libraries = ldd([BASE_PYTHON, setpriv, *modules])
    # Libraries inside the interpreter's own folders are bound with them.
    outside = [lib for lib in libraries if not lib.startswith(tuple(f"{f}/" for f in BASE_FOLDERS))]
    search = dict.fromkeys([*(HOST_DIR + str(Path(lib).parent) for lib in libraries)])
    prefix = (HOST_DIR + loader, "--library-path", ":".join(search))
    return prefix, BASE_FOLDERS, (loader, setpriv, *outside)


def setpriv_argv() -> tuple[str, ...]:
    """How setpriv is run in an image's sandbox."""
    prefix, _, files = host_files()
    return (*prefix, HOST_DIR + files[1])


def launcher(argv: tuple[str, ...]) -> Launcher:
    """The launcher of an image function whose workers exec ``argv`` (ENTRYPOINT + CMD)."""
    prefix, folders, files = host_files()
    return Launcher("image", HOST_DIR + BASE_PYTHON, folders, worker=argv, files=files, loader=prefix)
