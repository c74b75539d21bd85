"""Functions deployed through the API, kept under ``data_dir/functions/NAME/`` across restarts.

Each function has ``function.json`` (its settings, written atomically: a temporary file renamed
over the old one) and ``code/v-…/`` folders, one per uploaded version (see ``router.store.archive``).
A function's workers run in the version folder they started with, so an update never changes a
tree under a running invocation; it prunes the versions no worker runs any more, but for the two
newest (the other may come from a concurrent update, installed but not yet in effect).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from router.config import FunctionConfig
from router.store import archive

KEEP_VERSIONS = 2


class Deployed(msgspec.Struct):
    """What the Lambda API reports of a function beyond its FunctionConfig."""

    function: FunctionConfig
    role: str = ""
    description: str = ""
    code_sha256: str = ""
    code_size: int = 0
    last_modified: str = ""
    revision_id: str = ""
    from_config: bool = False  # defined in config.toml and read-only through the API
    tags: dict[str, str] = {}
    # When CreateFunctionUrlConfig made the function URL and when it last changed ("": never).
    url_created: str = ""
    url_modified: str = ""


def now_text() -> str:
    """Lambda's LastModified format: 2026-11-27T02:21:39.123+0000."""
    t = datetime.now(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"


def stamp(deployed: Deployed) -> Deployed:
    deployed.last_modified = now_text()
    deployed.revision_id = str(uuid.uuid4())
    return deployed


class Store:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir) / "functions"

    def load(self) -> list[Deployed]:
        found = []
        if self.root.is_dir():
            for path in sorted(self.root.glob("*/function.json")):
                found.append(msgspec.json.decode(path.read_bytes(), type=Deployed))
        return found

    def save(self, deployed: Deployed) -> None:
        folder = self.root / deployed.function.name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".function.json.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(deployed))
        os.replace(tmp, folder / "function.json")

    def install_code(self, name: str, zip_bytes: bytes, running: set[Path]) -> tuple[Path, str, int]:
        """Check and unpack a zip into a new version folder: (folder, CodeSha256, CodeSize), and
        prune the versions neither in ``running`` (those the function's workers run) nor newest.
        Blocking (up to 250 MB of disk writes): callers run it in a thread."""
        code_root = self.root / name / "code"
        version = archive.install(zip_bytes, code_root)
        # Names are v-<time_ns>-<random>: their order is the order the installs began.
        versions = sorted(p for p in code_root.glob(f"{archive.VERSION_PREFIX}*") if p.is_dir())
        archive.prune(code_root, {*versions[-KEEP_VERSIONS:], version, *running})
        sha = base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
        return version, sha, len(zip_bytes)

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)
