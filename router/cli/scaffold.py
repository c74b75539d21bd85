"""Create a function folder from a blueprint: its code (``app.py`` with ``handler`` for Python,
``index.mjs`` for Node.js, ``bootstrap`` and ``function.sh`` for a custom runtime), a sample
``event.json``, and ``requirements.txt`` where the function needs packages.

Blueprints are package data under ``router/cli/blueprints/<name>/``, read through importlib.resources
so they are found the same way from a checkout and from an installed wheel.
"""

from __future__ import annotations

import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from router.config import DEFAULT_RUNTIME, NAME_PATTERN
from workers.runtimes import nodejs

SKIPPED = ("__pycache__", ".pyc")


class ScaffoldError(Exception):
    pass


def blueprints_root() -> Traversable:
    return files("router.cli") / "blueprints"


def _discover() -> tuple[str, ...]:
    return tuple(sorted(entry.name for entry in blueprints_root().iterdir()
                        if entry.is_dir() and not entry.name.startswith(("_", "."))))


BLUEPRINTS = _discover()


def handler_of(blueprint: str) -> str:
    """The handler setting for a function made from ``blueprint``."""
    return launch_of(blueprint)[1]


def launch_of(blueprint: str) -> tuple[str, str]:
    """(runtime, handler), read from the blueprint's entry file: a custom runtime's ``bootstrap``,
    a Node.js ``index.mjs``, or else a Python ``app.py``."""
    _check_blueprint(blueprint)
    root = blueprints_root() / blueprint
    if (root / "bootstrap").is_file():
        return "provided.al2023", "function.handler"
    if (root / "index.mjs").is_file():
        return nodejs.installed() or "nodejs20.x", "index.handler"
    return DEFAULT_RUNTIME, "app.handler"


def create(name: str, blueprint: str, parent: Path) -> Path:
    """Create ``parent/name`` holding ``blueprint``'s files and return it.

    An existing folder is used only if it is empty, so nothing a user wrote is overwritten."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ScaffoldError(f"invalid function name {name!r}: use 1 to 64 letters, digits, '-' or '_'")
    _check_blueprint(blueprint)
    folder = Path(parent) / name
    if folder.exists() and not folder.is_dir():
        raise ScaffoldError(f"{folder} already exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise ScaffoldError(f"{folder} already exists and is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    _copy_tree(blueprints_root() / blueprint, folder)
    return folder


def _check_blueprint(blueprint: str) -> None:
    if blueprint not in BLUEPRINTS:
        raise ScaffoldError(f"unknown blueprint {blueprint!r}; choose one of: {', '.join(BLUEPRINTS)}")


def _copy_tree(source: Traversable, target: Path) -> None:
    for entry in source.iterdir():
        if entry.name.endswith(SKIPPED):
            continue
        if entry.is_dir():
            (target / entry.name).mkdir()
            _copy_tree(entry, target / entry.name)
        else:
            (target / entry.name).write_bytes(entry.read_bytes())
            if entry.name == "bootstrap":
                # Package data carries no file modes, and Lambda runs a bootstrap only if it is
                # executable.
                (target / entry.name).chmod(0o755)
